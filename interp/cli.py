"""``grokscope`` command line.

Subcommands live next to the code they drive: each module in :data:`EXTENSIONS`
defines ``add_cli(subparsers)``, which registers its parser and sets ``func``.
Every expected failure (bad value, missing run, corrupt file) is one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import warnings
from pathlib import Path

from interp.errors import ConfigError, StoreError
from interp.store import DEFAULT_ROOT, Run

#: modules that contribute subcommands through ``add_cli(subparsers)``
EXTENSIONS = ("probes.cli", "interp.diff", "interp.sweep", "apps.cli")


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``grokscope train: error: ... (see --help)``, exit 2,
    instead of a usage block followed by the error. Subcommand parsers inherit it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


EXPECTED_ERRORS = (ConfigError, StoreError, UsageError, OSError)  # OSError: unwritable, missing, full disk


def _cmd_train(args: argparse.Namespace) -> int:
    from interp.train import parse_field, preset, resume, train

    if args.resume:
        extra = [f"--{k}" for k in ("preset", "out", "name") if getattr(args, k)]
        extra += ["--root"] if args.root != str(DEFAULT_ROOT) else []
        if extra:
            raise UsageError(f"--resume continues RUN_DIR in place with its own config; drop {', '.join(extra)}")
        n_steps = None
        for pair in args.set or []:
            key, _, value = pair.partition("=")
            if key.strip() != "n_steps":
                raise UsageError(f"--set {key}: only n_steps may change when resuming")
            n_steps = parse_field("n_steps", value.strip())
        run = resume(args.resume, n_steps=n_steps, progress=not args.quiet)
    else:
        cfg = preset(args.preset or "nanda").with_overrides(args.set or [])
        run = train(cfg, args.out, root=args.root, name=args.name, progress=not args.quiet)
    s = run.summary()
    grok = f"grokked at step {s['grokked_step']}" if s["grokked_step"] is not None else "did not grok"
    print(f"{run.path}: {s['last_step']} steps, train acc {s['train_acc']:.3f}, "
          f"test acc {s['test_acc']:.3f}, {grok}")
    return 0


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _cmd_runs(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise UsageError(f"no runs directory at {root}; create a run with `grokscope train --preset demo`")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = Run.list(root)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if not runs:
        print(f"no runs under {root}; create one with `grokscope train --preset demo`")
        return 0
    rows = []
    for run in runs:  # one damaged run is reported and skipped, not the end of the listing
        try:
            rows.append(run.summary())
        except StoreError as e:
            print(f"warning: skipping {run.path}: {e}", file=sys.stderr)
    if not rows:
        print(f"no readable runs under {root}")
        return 0
    header = ["run", "status", "steps", "ckpts", "train_acc", "test_acc", "memorized", "grokked"]
    table = [[str(Path(r["run"]).relative_to(root)), r["status"], str(r["last_step"]), str(r["checkpoints"]),
              _fmt(r["train_acc"]), _fmt(r["test_acc"]), str(r["memorized_step"] or "-"),
              str(r["grokked_step"]) if r["grokked_step"] is not None else "no"] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    for line in [header, *table]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="grokscope", description="Mechanistic interpretability of grokking.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a run (or resume one)",
                       description="Train a transformer on a∘b mod p, saving checkpoints and metrics.")
    p.add_argument("--preset", help="nanda | demo | tiny (default nanda)")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="override config fields, e.g. --set p=97 frac_train=0.4")
    p.add_argument("--out", help="run directory (default: ROOT/NAME)")
    p.add_argument("--name", help="run name (default derived from the config)")
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="where new runs go (default checkpoints/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last saved state")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("runs", help="list runs with their accuracies and grokking step")
    p.add_argument("root", nargs="?", default=str(DEFAULT_ROOT))
    p.set_defaults(func=_cmd_runs)

    for module in EXTENSIONS:
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as e:
        print(f"grokscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grokscope: interrupted; resume with `grokscope train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
