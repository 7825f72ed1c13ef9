"""``grokscope sweep``: train a grid of runs (:func:`interp.sweep.run`), summarise and plot it.

    grokscope sweep [run] --preset nanda --grid frac_train=0.2,0.3,0.5 weight_decay=0.1,0.3,1 seed=0..4
    grokscope sweep --fork RUN --at 1000,2000,4000 --grid weight_decay=0,1 [--intervene NAME[:ARGS] ...]
    grokscope sweep summary SWEEP_DIR
    grokscope sweep plot SWEEP_DIR [--out DIR] [--x KEY] [--y KEY]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from apps.cli.common import UsageError, num, text_table
from interp import PRESETS
from interp.sweep import BACKENDS, DELAY_FACTOR, SUMMARY_FILE, SweepError


def format_table(df: Any, params: Sequence[str]) -> str:
    """A sweep summary as text: parameters, outcome, steps, losses, key frequencies, wall time."""
    from interp.sweep import format_value

    def step(v: Any, missing: str) -> str:
        return missing if num(v) == "-" else str(int(v))

    kf, act = "key_freqs" in df, "action" in df
    header = [*params, "outcome", "train 100%", "test 99%", "train_loss", "test_loss"]
    header += (["key_freqs"] if kf else []) + ["wall_s"] + (["action"] if act else [])
    rows = []
    for r in df.to_dict("records"):
        line = [format_value(r[p]) for p in params]
        line += [r.get("outcome", ""), step(r.get("memorized_step"), "-"), step(r.get("grokked_step"), "did not grok"),
                 num(r.get("train_loss")), num(r.get("test_loss"))]
        if kf:
            k = r.get("key_freqs")
            line.append(" ".join(str(int(x)) for x in k) if k is not None and len(k) else "-")
        line.append(num(r.get("wall_time")))
        rows.append(line + ([str(r["action"])] if act else []))
    return text_table(header, rows)


def _check_options(args: argparse.Namespace) -> None:
    if args.fork or args.at:
        if not (args.fork and args.at):
            raise UsageError("sweep: --fork RUN and --at STEP,STEP,... go together")
        if args.preset:
            raise UsageError("sweep --fork: the members start from RUN's config; --set changes it")
    elif not args.grid:
        raise UsageError("sweep: --grid is required, e.g. --grid frac_train=0.2,0.3 seed=0..2 "
                         "(or `grokscope sweep plot SWEEP_DIR`)")
    for opt, value, lo in (("--workers", args.workers, 1), ("--max-batch", args.max_batch, 1),
                           ("--num-gpus", args.num_gpus, 0), ("--max-retries", args.max_retries, 0)):
        if value is not None and value < lo:
            raise UsageError(f"{opt}: must be >= {lo}, got {value}")


MAX_MEMBERS = 100_000  # a grid larger than this is a typo (seed=0..1e9), refused before it is expanded


def check_grid_size(specs: list[str]) -> None:
    """UsageError when the ``--grid`` specs would make more than MAX_MEMBERS runs, counted
    without expanding any range."""
    total = 1
    for spec in specs:
        _, _, text = str(spec).partition("=")
        count = 0
        for item in text.split(","):
            lo, sep, hi = item.partition("..")
            try:
                count += int(float(hi)) - int(float(lo)) + 1 if sep else 1
            except (ValueError, OverflowError):
                count += 1  # not a number: parse_grid names the problem
        total *= max(count, 1)
        if total > MAX_MEMBERS:
            raise UsageError(f"--grid: {total if total < 10**15 else 'over 10^15'} runs is more than "
                             f"{MAX_MEMBERS:,}; narrow the ranges")


def _run(args: argparse.Namespace) -> int:
    from interp import preset
    from interp.sweep import default_out, parse_grid, run
    from probes import sweep_summary

    _check_options(args)
    if args.fork:
        return _run_fork(args)
    name = args.preset or "nanda"
    base = preset(name).with_overrides(args.set or [])
    if args.steps is not None:
        base = base.replace(n_steps=args.steps)
    if args.stop_after_grok is not None:
        base = base.replace(stop_after_grok=args.stop_after_grok)
    check_grid_size(args.grid)
    grid = parse_grid(args.grid)
    out = Path(args.out) if args.out else default_out(name, grid)
    return _execute(lambda: run(base, grid, out=out, backend=args.backend, workers=args.workers,
                                address=args.address, device=args.device, max_batch=args.max_batch,
                                num_gpus=args.num_gpus, max_retries=args.max_retries, progress=not args.quiet,
                                preset_name=name, columns=sweep_summary.columns(out)),
                    out, lambda df: list(grid))


def _run_fork(args: argparse.Namespace) -> int:
    """``--fork RUN --at ...``: a fork sweep (:func:`interp.sweep_fork.run_fork`)."""
    from apps.cli.fork import parse_steps
    from interp.sweep import FORK_STEP
    from interp.sweep_fork import default_fork_out, run_fork
    from probes import sweep_summary

    sets = [*(args.set or []), *([f"n_steps={args.steps}"] if args.steps is not None else []),
            *([f"stop_after_grok={args.stop_after_grok}"] if args.stop_after_grok is not None else [])]
    check_grid_size([f"{FORK_STEP}={args.at}", *(args.grid or [])])
    out = Path(args.out) if args.out else default_fork_out(args.fork, [FORK_STEP, *_grid_keys(args.grid)])
    return _execute(lambda: run_fork(args.fork, parse_steps(args.at), args.grid or [], set=sets,
                                     interventions=args.intervene or [], out=out, backend=args.backend,
                                     workers=args.workers, address=args.address, max_retries=args.max_retries,
                                     progress=not args.quiet, columns=sweep_summary.columns(out)),
                    out, lambda df: [c for c in df.columns if c == FORK_STEP or c in _grid_keys(args.grid)])


def _execute(sweep: Callable[[], Any], out: Path, params: Callable[[Any], list[str]]) -> int:
    """Run ``sweep`` (it returns the summary frame) and print its table; a failed member or Ctrl-C says how
    to continue (re-running the command resumes) and gives exit code 1 or 130."""
    try:
        df = sweep()
    except SweepError as e:
        print(f"grokscope: error: {e}", file=sys.stderr)
        print(f"summary of the others in {out / SUMMARY_FILE}; re-run the same command to retry", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"grokscope: interrupted; re-run the same command to continue the sweep in {out}", file=sys.stderr)
        return 130
    return _print_result(df, params(df), out)


def _grid_keys(specs: list[str] | None) -> list[str]:
    return [s.partition("=")[0].strip() for s in specs or []]


def _print_result(df: Any, params: list[str], out: Path) -> int:
    print(format_table(df, params))
    n = {a: int((df["action"] == a).sum()) for a in ("trained", "resumed", "skipped")}
    print(f"{out}: {len(df)} members ({n['trained']} trained, {n['resumed']} resumed, {n['skipped']} skipped); "
          f"{int(df['grokked'].sum())} grokked. Plots: grokscope sweep plot {out}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from interp.sweep import Sweep
    from probes.sweep_summary import summarize

    sweep = Sweep.open(args.sweep_dir)
    print(format_table(summarize(sweep.path, delay_factor=args.delay_factor), list(sweep.grid)))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from apps.sweep_plots import plot_sweep

    written, notes = plot_sweep(args.sweep_dir, out=args.out, delay_factor=args.delay_factor, x=args.x, y=args.y)
    for line in [*notes, *map(str, written)]:
        print(line)
    return 0


def run(args: argparse.Namespace) -> int:
    return {"plot": _plot, "summary": _summary}.get(args.sweep_command, _run)(args)


def _run_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--preset", default=d(None), help=f"base config: {' | '.join(PRESETS)} (default nanda)")
    p.add_argument("--grid", nargs="+", action="extend", default=d(None), metavar="KEY=VALUES",
                   help="swept fields: comma lists and inclusive integer ranges, e.g. frac_train=0.2,0.3 seed=0..4")
    p.add_argument("--set", nargs="+", action="extend", default=d(None), metavar="KEY=VALUE",
                   help="override base config fields, e.g. --set p=97 eval_every=50")
    p.add_argument("--steps", type=int, default=d(None), help="n_steps of every member")
    p.add_argument("--stop-after-grok", type=int, default=d(None), metavar="N",
                   help="stop a member once test acc has stayed >= 99%% for N steps")
    p.add_argument("--out", default=d(None), help="sweep directory (default checkpoints/sweep_<preset>_<fields>)")
    p.add_argument("--backend", choices=BACKENDS, default=d("local"),
                   help="local (batched on a GPU, else a process pool), local-pool, local-batched, ray")
    p.add_argument("--workers", type=int, default=d(None), help="pool size (default: the cores available)")
    p.add_argument("--address", default=d(None), help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--device", default=d(None), help="local-batched device (default cuda if available, else cpu)")
    p.add_argument("--max-batch", type=int, default=d(128), help="most models trained in one batch")
    p.add_argument("--num-gpus", type=float, default=d(0.0),
                   help="ray: GPUs per task; > 0 trains batches of members on GPUs")
    p.add_argument("--max-retries", type=int, default=d(3), help="ray: retries of a failed task")
    p.add_argument("--quiet", action="store_true", default=d(False), help="no progress bars")
    p.add_argument("--fork", default=d(None), metavar="RUN",
                   help="fork RUN instead of training from scratch: one member per --at step and grid point")
    p.add_argument("--at", default=d(None), metavar="STEP,STEP,...", help="with --fork: the fork steps (an axis)")
    p.add_argument("--intervene", nargs="+", action="extend", default=d(None), metavar="NAME[:ARGS]",
                   help="with --fork: interventions at the fork step for every member "
                        "(as an axis: --grid intervene=none,stablemax+orthograd)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="train a grid of runs; `sweep plot DIR` for phase diagrams",
        description="Train every point of a parameter grid (re-running resumes), print a summary. "
                    "`grokscope sweep --grid ...` is `grokscope sweep run --grid ...`.")
    _run_options(p, suppress=False)
    p.set_defaults(func=run, sweep_command=None, process_settings=True)
    sub2 = p.add_subparsers(dest="sweep_command", metavar="{run,plot,summary}")
    r = sub2.add_parser("run", help="train the grid (the default)", description="Train every point of a grid.")
    _run_options(r, suppress=True)
    for cmd, hlp in (("plot", "write phase-diagram plots of a sweep"), ("summary", "print a sweep's summary")):
        q = sub2.add_parser(cmd, help=hlp, description=hlp[0].upper() + hlp[1:] + ".")
        q.add_argument("sweep_dir", metavar="SWEEP_DIR")
        q.add_argument("--delay-factor", type=float, default=DELAY_FACTOR,
                       help="comprehension if test 99%% comes within this factor of train 100%% (default 2)")
        if cmd == "plot":
            q.add_argument("--out", help="where the plots go (default SWEEP_DIR/plots)")
            q.add_argument("--x", help="phase diagram x parameter (default frac_train or the first swept)")
            q.add_argument("--y", help="phase diagram y parameter (default weight_decay or the second swept)")
