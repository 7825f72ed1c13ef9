"""``grokscope probe``: measure a run's checkpoints with probes (cached under RUN/probes/).

    grokscope probe RUN [--probes NAMES...] [--steps STEPS...] [--status] [--quiet] [--key-freqs final]

STEPS follow :mod:`probes.steps`: integers, ``first``, ``last``, ranges ``A..B``, comma lists.
"""

from __future__ import annotations

import argparse

from apps.cli.common import UsageError


def parse_key_freqs(value: str) -> str | list[int]:
    """'final', 'checkpoint' or a comma-separated list of frequencies."""
    if value in ("final", "checkpoint"):
        return value
    try:
        return [int(k) for k in value.split(",")]
    except ValueError:
        raise UsageError(f"--key-freqs: expected final, checkpoint or a list like 14,35,41; got {value!r}") from None


def run(args: argparse.Namespace) -> int:
    import probes
    from interp import Run
    from probes.steps import select_steps

    target = Run.open(args.run)
    steps = select_steps(args.steps, target.steps)
    key_freqs = parse_key_freqs(args.key_freqs)
    if args.status:
        info = probes.status(target, args.probes, key_freqs=key_freqs)
        for name, entry in info["probes"].items():
            state = "up to date" if not entry["missing"] else f"{len(entry['missing'])} missing ({entry['reason']})"
            if entry["reason"].startswith("does not apply"):  # issue 13: skipped for this run's task
                state = entry["reason"]
            print(f"{name:24s} {entry['up_to_date']}/{len(info['steps'])} steps  {state}")
        return 0
    before = probes.status(target, args.probes, key_freqs=key_freqs)["n_missing"]
    df = probes.run(target, names=args.probes, steps=steps, progress=not args.quiet, key_freqs=key_freqs)
    after = probes.status(target, args.probes, key_freqs=key_freqs)["n_missing"]
    print(f"{target.path}: {before - after} (probe, step) results computed, {df['step'].nunique()} steps "
          f"and {df['probe'].nunique()} probes with scalars cached in {target.path / 'probes'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="measure a run's checkpoints with probes (cached under RUN/probes/)",
                       description="Run probes over every checkpoint of a run; results already cached "
                                   "for the same probe version, parameters and checkpoint are skipped.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--probes", nargs="+", metavar="NAME", help="probe names (default: all default probes)")
    p.add_argument("--steps", nargs="+", metavar="STEP",
                   help="steps: integers, first, last, ranges A..B (either end optional), comma lists (default all)")
    p.add_argument("--status", action="store_true", help="only report which probes/steps are missing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--key-freqs", default="final", metavar="final|checkpoint|K,K,...",
                   help="frequencies of the progress measures: the final checkpoint's key frequencies (default, "
                        "as Nanda et al. 2023), each checkpoint's own, or an explicit list")
    p.set_defaults(func=run, process_settings=True)
