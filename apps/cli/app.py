"""``grokscope app``: start the Streamlit dashboard on localhost.

    grokscope app                           # every run under checkpoints/
    grokscope app checkpoints/demo --port 8600
    grokscope app --root sweeps/
    grokscope app --address 0.0.0.0            # only when the network may see (and probe) every run

The runs and root travel to ``apps/dashboard.py`` as script arguments after ``--``
(the dashboard also reads ``GROKSCOPE_RUNS`` / ``GROKSCOPE_ROOT``, which the tests use).
SIGTERM or Ctrl-C stops the Streamlit server too.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from apps.cli.common import UsageError

DASHBOARD = Path(__file__).parents[1] / "dashboard.py"


def streamlit_command(runs: list[str], root: str, port: int, address: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line that serves the dashboard (headless, bound to ``address``)."""
    cmd = [sys.executable, "-m", "apps.serve", "run", str(DASHBOARD),  # streamlit, imports warmed first
           "--server.address", address, "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal", "--", "--root", root]
    return cmd + [str(Path(r)) for r in runs]


def serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server ``cmd`` until it exits, Ctrl-C or SIGTERM; the last two stop it too."""
    proc = subprocess.Popen(cmd, env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the server too; wait for it below
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port: must be between 1 and 65535, got {args.port}")
    for run in args.runs:
        if not Path(run).is_dir():
            raise UsageError(f"no run directory at {run}; create one with `grokscope train --preset demo`")
    if not args.runs and not Path(args.root).is_dir():
        raise UsageError(f"no runs directory at {args.root}; create a run with `grokscope train --preset demo`")
    cmd = streamlit_command(args.runs, args.root, args.port, args.address)
    print(f"grokscope dashboard on http://{args.address}:{args.port}  (Ctrl-C stops it)", file=sys.stderr)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(DASHBOARD.parents[1]),
                                                                    os.environ.get("PYTHONPATH")]))}
    return serve(cmd, env)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="open the dashboard (Streamlit, localhost only)",
                              description="Serve the grokscope dashboard on 127.0.0.1.")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="runs to show (default: every run under --root)")
    p.add_argument("--root", default="checkpoints", help="where to look for runs (default checkpoints/)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the runs "
                        "and the probe button to the network)")
    p.set_defaults(func=run)
