"""``make bench``: performance targets, measured on this machine, written as JSON and a table.

    python -m tests.bench [--quick] [--only train,probes] [--out bench-results/bench.json]

Each section (a module of this package with ``bench(quick) -> rows``) runs in its own subprocess, so its
peak RSS is its own; the JSON file is rewritten after each section, so an interrupted run keeps what ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from interp.perf import reuse_freed_memory
from tests.bench.common import print_table, row, write_report

SECTIONS = ["train", "probes", "diff", "sweep", "dashboard", "browser"]
THREADS = {"dashboard": 1, "browser": 1}  # torch threads per section; 2 otherwise
#: the peak-RSS rows keep the names they had when each section lived in the package it measures
RSS_NAMES = {"train": "interp.bench", "probes": "probes.bench", "diff": "interp.bench_diff",
             "sweep": "interp.bench_sweep", "dashboard": "apps.bench",
             "browser": "browser bench (driver; the server is a subprocess)"}
MARK = "BENCH_JSON "


def run_section(name: str, quick: bool) -> list[dict]:
    """In this process: the section's rows, then its peak RSS. This process is the entry point, so the
    process-wide settings are made here: torch threads, and malloc keeping freed memory for reuse."""
    torch.set_num_threads(THREADS.get(name, 2))
    reuse_freed_memory()
    rows = importlib.import_module(f"tests.bench.{name}").bench(quick=quick)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [*rows, row(f"{RSS_NAMES[name]}: peak RSS", peak_mb, "MiB")]


def spawn_section(name: str, quick: bool) -> list[dict]:
    """The section's rows from a subprocess, or one FAILED row."""
    cmd = [sys.executable, "-m", "tests.bench", "--section", name] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return [row(f"{name}: FAILED ({tail[0][:100]})", math.nan, "", None, False)]
    return json.loads(lines[-1][len(MARK):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 40k-step nanda run and other long parts")
    ap.add_argument("--only", help=f"comma-separated sections from {','.join(SECTIONS)}")
    ap.add_argument("--out", default="bench-results/bench.json")
    ap.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)  # internal: one section, as JSON
    args = ap.parse_args(argv)
    if args.section:
        print(MARK + json.dumps(run_section(args.section, args.quick)))
        return 0
    names = args.only.split(",") if args.only else SECTIONS
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        print(f"bench: unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    out, rows = Path(args.out), []
    meta = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__, "threads": 2,
            "quick": args.quick, "sections": names}
    for name in names:
        print(f"== {name}", flush=True)
        section_rows = spawn_section(name, args.quick)
        rows += section_rows
        write_report(out, meta, rows)
        print_table(section_rows)
    print(f"\n== all sections ({out})")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
