"""``grokscope fork``: continue a run from any step under a changed config or an intervention.

    grokscope fork RUN --at STEP [--set KEY=VALUE ...] [--intervene NAME[:ARGS] ...] [--name NAME]
                   [--out DIR] [--no-train] [--quiet]

Interventions (``interp.interventions``): wd:V, lr:V, optimizer:adamw|adam|sgd, grokfast:ema|ma|none,
float64, stablemax, orthograd, ablate:K1,K2[:W_L] | ablate:topN[:W_L], freeze:PREFIX.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from interp import fork
    from interp.interventions import parse

    for spec in args.intervene or []:
        parse(spec)  # an unknown name fails before any directory is made
    child = fork(args.run, args.at, set=args.set or [], interventions=args.intervene or [], name=args.name,
                 out=args.out, train=not args.no_train, progress=not args.quiet)
    lineage = child.meta["fork"]
    if lineage.get("note"):
        print(lineage["note"])
    changes = "; ".join(n for n in lineage["notes"] if n != lineage.get("note")) or "no change"
    print(f"{child.path}: forked {lineage['parent_name']} at step {lineage['step']} ({changes})")
    if not args.no_train:
        s = child.summary()
        grok = f"grokked at step {s['grokked_step']}" if s["grokked_step"] is not None else "did not grok"
        print(f"{child.path}: {s['last_step']} steps, test acc {s['test_acc']:.3f}, {grok}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fork", help="fork a run at a step, with changes or interventions",
                       description="Start a new run from RUN's exact training state at STEP and continue it "
                                   "under a changed config or with interventions applied.")
    p.add_argument("run", metavar="RUN", help="the parent run directory")
    p.add_argument("--at", type=int, required=True, metavar="STEP", help="the step to fork at")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", help="config changes from STEP on")
    p.add_argument("--intervene", action="extend", nargs="+", metavar="NAME[:ARGS]",
                   help="interventions at STEP, e.g. wd:0, ablate:top, stablemax, orthograd, freeze:embed")
    p.add_argument("--name", help="the fork's name (default PARENT_fork<STEP>, beside the parent)")
    p.add_argument("--out", help="the fork's directory")
    p.add_argument("--no-train", action="store_true", help="create the fork without training it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, process_settings=True)
