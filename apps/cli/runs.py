"""``grokscope runs [ROOT]``: list runs with their accuracies and grokking step; forks are listed
under their parents (``└ NAME @STEP``, indented per generation)."""

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
    for r, label in lineage_order(runs, root):  # one damaged run is reported and skipped
        try:
            rows.append({**r.summary(), "label": label})
        except StoreError as e:
            print(f"warning: skipping {r.path}: {e}", file=sys.stderr)
    if not rows:
        print(f"no readable runs under {root}")
        return 0
    print(text_table(HEADER, [
        [r["label"], r["status"], str(r["last_step"]), str(r["checkpoints"]),
         num(r["train_acc"], ".3f"), num(r["test_acc"], ".3f"), str(r["memorized_step"] or "-"),
         str(r["grokked_step"]) if r["grokked_step"] is not None else "no"] for r in rows]))
    return 0


def lineage_order(runs: list[Run], root: Path) -> list[tuple[Run, str]]:
    """Runs in listing order with each fork right after its parent: (run, label), the label a
    fork's ``└ path @STEP`` indented by its generation."""
    by_path = {str(r.path.resolve()): r for r in runs}
    children: dict[str, list[Run]] = {}
    tops = []
    for r in runs:
        parent = (r.meta.get("fork") or {}).get("parent")
        if parent in by_path and parent != str(r.path.resolve()):
            children.setdefault(parent, []).append(r)
        else:
            tops.append(r)
    out: list[tuple[Run, str]] = []

    def visit(r: Run, depth: int) -> None:
        rel = str(r.path.relative_to(root)) if r.path.is_relative_to(root) else str(r.path)
        f = r.meta.get("fork")
        label = rel if depth == 0 and not f else f"{'  ' * max(depth - 1, 0)}└ {rel} @{f['step']}" if depth else \
            f"{rel} @{f['step']}"
        out.append((r, label))
        for c in children.get(str(r.path.resolve()), []):
            if len(out) <= len(runs):  # a lineage loop cannot recurse for ever
                visit(c, depth + 1)

    for r in tops:
        visit(r, 0)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs with their accuracies and grokking step")
    p.add_argument("root", nargs="?", default=str(DEFAULT_ROOT))
    p.set_defaults(func=run)
