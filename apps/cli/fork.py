"""``grokscope fork``: continue a run from any step under a changed config or an intervention.

    grokscope fork RUN --at STEP [--set KEY=VALUE ...] [--intervene NAME[:ARGS] ...] [--name NAME]
                   [--out DIR] [--no-train] [--quiet]
    grokscope fork RUN --at 1000,2000,4000 [--grid weight_decay=0,1 ...]   (one fork per step and grid point)
    grokscope fork RUN --at 1000 --grid intervene=none,stablemax+orthograd,ablate:top

The same grid as a sweep directory with a summary table and plots: ``grokscope sweep --fork RUN
--at ... --grid ...`` (:func:`interp.sweep_fork.run_fork`); both read ``--grid`` with
:func:`interp.sweep.parse_grid` and make each fork's arguments with :func:`interp.fork.point_args`.

Interventions (``interp.interventions``): wd:V, lr:V, optimizer:adamw|adam|sgd, grokfast:ema|ma|none,
float64, stablemax, orthograd, ablate:K1,K2[:W_L] | ablate:topN[:W_L], freeze:PREFIX.
"""

from __future__ import annotations

import argparse

from apps.cli.common import UsageError


def parse_steps(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--at {text!r}: expected STEP or STEP,STEP,...") from None


def run(args: argparse.Namespace) -> int:
    from interp.fork import fork, fork_grid
    from interp.interventions import parse
    from interp.sweep import parse_grid

    for spec in args.intervene or []:
        parse(spec)  # an unknown name fails before any directory is made
    steps = parse_steps(args.at)
    if len(steps) > 1 or args.grid:
        if args.name or args.out:
            raise UsageError("--name/--out name one fork; a grid of forks is named <parent>_fork<step>_<key><value>")
        grid = parse_grid(args.grid, fork=True) if args.grid else {}
        for child in fork_grid(args.run, steps, grid, set=args.set or [],
                               interventions=args.intervene or [], train=not args.no_train, progress=not args.quiet):
            _report(child, not args.no_train)
        return 0
    child = fork(args.run, steps[0], set=args.set or [], interventions=args.intervene or [], name=args.name,
                 out=args.out, train=not args.no_train, progress=not args.quiet)
    _report(child, not args.no_train)
    return 0


def _report(child, trained: bool) -> None:
    lineage = child.meta["fork"]
    if lineage.get("note"):
        print(lineage["note"])
    changes = "; ".join(n for n in lineage["notes"] if n != lineage.get("note")) or "no change"
    print(f"{child.path}: forked {lineage['parent_name']} at step {lineage['step']} ({changes})")
    if trained:
        s = child.summary()
        grok = f"grokked at step {s['grokked_step']}" if s["grokked_step"] is not None else "did not grok"
        print(f"{child.path}: {s['last_step']} steps, test acc {s['test_acc']:.3f}, {grok}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fork", help="fork a run at a step, with changes or interventions",
                       description="Start a new run from RUN's exact training state at STEP and continue it "
                                   "under a changed config or with interventions applied.")
    p.add_argument("run", metavar="RUN", help="the parent run directory")
    p.add_argument("--at", required=True, metavar="STEP[,STEP...]", help="the step(s) to fork at")
    p.add_argument("--grid", action="extend", nargs="+", metavar="KEY=V1,V2",
                   help="one fork per combination of these values (and per step)")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", help="config changes from STEP on")
    p.add_argument("--intervene", action="extend", nargs="+", metavar="NAME[:ARGS]",
                   help="interventions at STEP, e.g. wd:0, ablate:top, stablemax, orthograd, freeze:embed")
    p.add_argument("--name", help="the fork's name (default PARENT_fork<STEP>, beside the parent)")
    p.add_argument("--out", help="the fork's directory")
    p.add_argument("--no-train", action="store_true", help="create the fork without training it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, process_settings=True)
