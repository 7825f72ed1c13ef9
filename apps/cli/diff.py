"""``grokscope diff``: compare two checkpoints (:func:`probes.diff.compare`), render with :mod:`apps.report`.

    grokscope diff RUN --from 400 --to 2000 [--html F] [--md F] [--json F]
    grokscope diff RUN --transition                     # memorization_end -> cleanup_end
    grokscope diff RUN_A@STEP RUN_B@STEP                # two runs

STEP is an integer, ``first`` or ``last`` (:mod:`probes.steps`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apps.cli.common import UsageError
from interp.store import DEFAULT_ROOT
from probes.diff import TOP_K


def _checkpoints(args: argparse.Namespace):
    """The (before, after) :class:`probes.diff.Checkpoint` pair the arguments name."""
    from probes.diff import Checkpoint, open_run, transition_steps
    from probes.steps import parse_step

    targets, root = args.targets, args.root
    steps_given = args.from_step is not None or args.to_step is not None
    if len(targets) == 2:
        if steps_given or args.transition:
            raise UsageError("with two RUN@STEP arguments, drop --from/--to/--transition")
        return Checkpoint.parse(targets[0], root), Checkpoint.parse(targets[1], root)
    if len(targets) != 1:
        raise UsageError("expected RUN (with --from/--to or --transition) or RUN_A@STEP RUN_B@STEP")
    if "@" in targets[0] and not Path(targets[0]).is_dir():
        raise UsageError(f"{targets[0]!r}: give a second RUN@STEP to compare with, or RUN --from A --to B")
    run = open_run(targets[0], root)
    if args.transition:
        if steps_given:
            raise UsageError("--transition picks the steps itself; drop --from/--to")
        a, b = transition_steps(run)
        return Checkpoint(run, a), Checkpoint(run, b)
    if args.from_step is None or args.to_step is None:
        raise UsageError("give both --from STEP and --to STEP (or --transition)")
    return Checkpoint(run, parse_step(args.from_step, run.steps)), Checkpoint(run, parse_step(args.to_step, run.steps))


def run(args: argparse.Namespace) -> int:
    from apps.report import to_html, to_markdown
    from probes.diff import compare

    if args.top_k < 1:
        raise UsageError(f"--top-k: must be >= 1, got {args.top_k}")
    targets = [(Path(f), kind) for f, kind in ((args.html, "html"), (args.md, "md"), (args.json, "json")) if f]
    for path, _ in targets:  # fail before the (slow) comparison
        if not path.parent.is_dir():
            raise UsageError(f"cannot write {path}: no directory {path.parent}")
    report = compare(*_checkpoints(args), top_k=args.top_k)
    if not targets:
        sys.stdout.write(to_markdown(report))
        return 0
    render = {"html": lambda: to_html(report), "md": lambda: to_markdown(report),
              "json": lambda: report.to_json(indent=1)}
    for path, kind in targets:
        try:
            path.write_text(render[kind]())
        except OSError as e:
            raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff", help="compare two checkpoints (weights, Fourier, behaviour, attention, CKA)",
        description="Compare two checkpoints of a run (RUN --from A --to B, or RUN --transition) or of two "
                    "runs (RUN_A@STEP RUN_B@STEP). Writes a self-contained HTML report, Markdown and/or JSON; "
                    "with no output flag prints the Markdown summary.")
    p.add_argument("targets", nargs="+", metavar="RUN | RUN@STEP",
                   help="a run directory (or name under --root), or two RUN@STEP (STEP: integer, first, last)")
    p.add_argument("--from", dest="from_step", metavar="STEP", help="the 'before' checkpoint (integer, first, last)")
    p.add_argument("--to", dest="to_step", metavar="STEP", help="the 'after' checkpoint (integer, first, last)")
    p.add_argument("--transition", action="store_true",
                   help="compare the end of memorisation with the end of cleanup (probes.phases)")
    p.add_argument("--html", metavar="FILE", help="write the HTML report (one file, opens offline)")
    p.add_argument("--md", metavar="FILE", help="write the Markdown summary")
    p.add_argument("--json", metavar="FILE", help="write every number as JSON")
    p.add_argument("--top-k", type=int, default=TOP_K, help=f"singular values per matrix (default {TOP_K})")
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="where run names are looked up (default checkpoints/)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.set_defaults(func=run, process_settings=True)
