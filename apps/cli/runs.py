"""``grokscope runs [ROOT]``: list runs with their accuracies and grokking step."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from apps.cli.common import UsageError, num, text_table
from interp import Run
from interp.errors import StoreError
from interp.store import DEFAULT_ROOT

HEADER = ("run", "status", "steps", "ckpts", "train_acc", "test_acc", "memorized", "grokked")


def run(args: argparse.Namespace) -> int:
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
    for r in runs:  # one damaged run is reported and skipped, not the end of the listing
        with warnings.catch_warnings(record=True) as caught:  # e.g. metrics read from the previous generation
            warnings.simplefilter("always")
            try:
                rows.append(r.summary())
            except StoreError as e:
                print(f"warning: skipping {r.path}: {e}", file=sys.stderr)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    if not rows:
        print(f"no readable runs under {root}")
        return 0
    print(text_table(HEADER, [
        [str(Path(r["run"]).relative_to(root)), r["status"], str(r["last_step"]), str(r["checkpoints"]),
         num(r["train_acc"], ".3f"), num(r["test_acc"], ".3f"), str(r["memorized_step"] or "-"),
         str(r["grokked_step"]) if r["grokked_step"] is not None else "no"] for r in rows]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs with their accuracies and grokking step")
    p.add_argument("root", nargs="?", default=str(DEFAULT_ROOT))
    p.set_defaults(func=run)
