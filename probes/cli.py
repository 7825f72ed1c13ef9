"""``grokscope probe`` and ``grokscope import`` (registered by :func:`add_cli`).

    grokscope probe RUN [--probes NAMES...] [--steps STEPS...] [--status] [--quiet]
    grokscope import FILE --format tl|nanda2023 --out DIR [--op add] [--p 113] [--frac-train 0.3] ...
"""

from __future__ import annotations

import argparse
from typing import Any

from interp.tasks import OPERATIONS


def parse_steps(values: list[str] | None, saved: list[int]) -> list[int] | None:
    """``--steps`` values: integers, ``A:B`` (saved steps with A <= step <= B, either end optional)
    or ``last``; None when not given."""
    from interp.cli import UsageError

    if not values:
        return None
    out: set[int] = set()
    for value in values:
        try:
            if value == "last":
                out.update(saved[-1:])
            elif ":" in value:
                lo, hi = value.split(":", 1)
                lo_i, hi_i = int(lo) if lo else min(saved, default=0), int(hi) if hi else max(saved, default=0)
                out.update(s for s in saved if lo_i <= s <= hi_i)
            else:
                out.add(int(value))
        except ValueError:
            raise UsageError(f"--steps {value!r}: expected an integer, A:B or 'last'") from None
    return sorted(out)


def _cmd_probe(args: argparse.Namespace) -> int:
    import probes
    from interp.store import Run

    run = Run.open(args.run)
    steps = parse_steps(args.steps, run.steps)
    key_freqs = _parse_key_freqs(args.key_freqs)
    if args.status:
        info = probes.status(run, args.probes, key_freqs=key_freqs)
        for name, entry in info["probes"].items():
            state = "up to date" if not entry["missing"] else f"{len(entry['missing'])} missing ({entry['reason']})"
            print(f"{name:24s} {entry['up_to_date']}/{len(info['steps'])} steps  {state}")
        return 0
    before = probes.status(run, args.probes, key_freqs=key_freqs)["n_missing"]
    df = probes.run(run, names=args.probes, steps=steps, progress=not args.quiet, key_freqs=key_freqs)
    after = probes.status(run, args.probes, key_freqs=key_freqs)["n_missing"]
    print(f"{run.path}: {before - after} (probe, step) results computed, {df['step'].nunique()} steps "
          f"and {df['probe'].nunique()} probes with scalars cached in {run.path / 'probes'}")
    return 0


def _parse_key_freqs(value: str) -> str | list[int]:
    """'final', 'checkpoint' or a comma-separated list of frequencies."""
    from interp.cli import UsageError

    if value in ("final", "checkpoint"):
        return value
    try:
        return [int(k) for k in value.split(",")]
    except ValueError:
        raise UsageError(f"--key-freqs: expected final, checkpoint or a list like 14,35,41; got {value!r}") from None


def _cmd_import(args: argparse.Namespace) -> int:
    from probes.importers import import_checkpoints

    run = import_checkpoints(args.file, args.format, args.out, op=args.op, p=args.p, frac_train=args.frac_train,
                             data_seed=args.data_seed, act_fn=args.act_fn)
    s = run.summary()
    print(f"{run.path}: imported {s['checkpoints']} checkpoint(s) (steps {run.steps[0]}..{run.steps[-1]}), "
          f"train acc {s['train_acc']:.3f}, test acc {s['test_acc']:.3f} on grokscope's split")
    return 0


def add_cli(sub: Any) -> None:
    p = sub.add_parser("probe", help="measure a run's checkpoints with probes (cached under RUN/probes/)",
                       description="Run probes over every checkpoint of a run; results already cached "
                                   "for the same probe version, parameters and checkpoint are skipped.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--probes", nargs="+", metavar="NAME", help="probe names (default: all default probes)")
    p.add_argument("--steps", nargs="+", metavar="STEP", help="steps: integers, A:B ranges or 'last' (default all)")
    p.add_argument("--status", action="store_true", help="only report which probes/steps are missing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--key-freqs", default="final", metavar="final|checkpoint|K,K,...",
                   help="frequencies of the progress measures: the final checkpoint's key frequencies (default, "
                        "as Nanda et al. 2023), each checkpoint's own, or an explicit list")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("import", help="turn a TransformerLens or Nanda et al. 2023 checkpoint file into a run",
                       description="Import foreign checkpoints (loaded with torch.load(weights_only=True)) "
                                   "as a grokscope run; the model config is inferred from the shapes.")
    p.add_argument("file", metavar="FILE", help=".pt/.pth file: a state dict, {'model': ...}, a list, "
                                                "or {'checkpoints': [...], 'checkpoint_epochs': [...]}")
    p.add_argument("--format", required=True, choices=("tl", "nanda2023"), help="layout of the state dicts")
    p.add_argument("--out", required=True, metavar="DIR", help="new run directory")
    p.add_argument("--op", default="add", choices=OPERATIONS, help="the task's operation (default add)")
    p.add_argument("--p", type=int, help="modulus (default: inferred from the embedding, d_vocab - 1)")
    p.add_argument("--frac-train", type=float, default=0.3, help="train fraction of grokscope's split (0.3)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of grokscope's split (0)")
    p.add_argument("--act-fn", default="relu", choices=("relu", "gelu"), help="MLP activation (default relu)")
    p.set_defaults(func=_cmd_import)
