"""``grokscope train``: train a run, or resume one.

    grokscope train [--preset nanda|demo|tiny] [--set KEY=VALUE ...] [--out DIR | --name NAME] [--root DIR]
    grokscope train --resume RUN_DIR [--set n_steps=N]
"""

from __future__ import annotations

import argparse

from apps.cli.common import UsageError
from interp.store import DEFAULT_ROOT


def _resume_steps(args: argparse.Namespace) -> int | None:
    """The new n_steps of ``--resume RUN_DIR --set n_steps=N`` (the only change a resume takes)."""
    from interp.config import parse_field

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
    return n_steps


def run(args: argparse.Namespace) -> int:
    from interp import preset, resume, train

    if args.resume:
        result = resume(args.resume, n_steps=_resume_steps(args), progress=not args.quiet)
    else:
        cfg = preset(args.preset or "nanda").with_overrides(args.set or [])
        result = train(cfg, args.out, root=args.root, name=args.name, progress=not args.quiet)
    s = result.summary()
    grok = f"grokked at step {s['grokked_step']}" if s["grokked_step"] is not None else "did not grok"
    print(f"{result.path}: {s['last_step']} steps, train acc {s['train_acc']:.3f}, "
          f"test acc {s['test_acc']:.3f}, {grok}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a run (or resume one)",
                       description="Train a transformer on a∘b mod p, saving checkpoints and metrics.")
    p.add_argument("--preset", help="nanda | demo | tiny | sinks | sparse | tiny_seq (default nanda)")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="override config fields, e.g. --set p=97 frac_train=0.4")
    p.add_argument("--out", help="run directory (default: ROOT/NAME)")
    p.add_argument("--name", help="run name (default derived from the config)")
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="where new runs go (default checkpoints/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last saved state")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, process_settings=True)
