"""``make demo``: train the demo run, probe it, write a transition report, open the dashboard.

The demo is an entry point: it applies the process settings (:func:`interp.perf.reuse_freed_memory`)
itself. Every stage is idempotent: a finished run is not retrained (an interrupted one is resumed),
probes already cached are skipped, so running the demo twice costs seconds.

    python -m apps.demo [--out checkpoints/demo] [--preset demo] [--no-app] [--port 8501]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import probes
from apps.cli.app import streamlit_command
from apps.report import to_html, to_markdown
from interp import Run, preset, resume, train
from interp.perf import reuse_freed_memory
from probes.diff import compare, transition_steps


def train_or_resume(path: Path, preset_name: str = "demo") -> Run:
    if (path / "run.json").exists():
        print(f"[demo] {path} exists: resuming it if unfinished")
        return resume(path)
    print(f"[demo] training the {preset_name} preset into {path}")
    return train(preset(preset_name), path, name=path.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="checkpoints/demo", type=Path)
    ap.add_argument("--no-app", action="store_true", help="stop before starting the dashboard")
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument("--preset", default="demo", help="preset to train (default demo: Grokfast EMA, groks in ~2k steps)")
    args = ap.parse_args(argv)
    reuse_freed_memory()

    run = train_or_resume(args.out, args.preset)
    s = run.summary()
    print(f"[demo] train acc {s['train_acc']:.3f} (100% at step {s['memorized_step']}), "
          f"test acc {s['test_acc']:.3f} (≥99% at step {s['grokked_step']})")

    print("[demo] probing every checkpoint (cached under probes/)")
    probes.run(run)

    a, b = transition_steps(run)
    report = compare((run, a), (run, b))
    html = run.path / "transition.html"
    html.write_text(to_html(report))
    (run.path / "transition.md").write_text(to_markdown(report))
    print(f"[demo] transition report, steps {a} -> {b}: {html}")
    for line in report.summary:
        print(f"  - {line}")

    if args.no_app:
        return 0
    print(f"[demo] dashboard on http://127.0.0.1:{args.port} (Ctrl-C stops it)")
    try:
        return subprocess.call(streamlit_command([str(run.path)], str(run.path.parent), args.port))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
