"""The dashboard screenshots in docs/img: one page of a probed run at chosen steps, in headless Chromium.

    python docs/screenshots.py checkpoints/demo --page fourier --steps 480,845,1720 --names before,during,after

writes ``docs/img/fourier_before.png`` etc. (``--out`` for another folder). Serves the run the way
``grokscope app`` does, on a free localhost port; needs Debian's Chromium (``/usr/bin/chromium``) and
Playwright (the ``dev`` extra). ``--tab`` opens one of the page's tabs first (default: the page's first).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from apps.cli.app import streamlit_command  # noqa: E402
from tests.bench.browser import CHROMIUM, CHROMIUM_ARGS, IDLE, free_port, wait_healthy  # noqa: E402


def shoot(run: Path, page: str, steps: list[int], names: list[str], out: Path, tab: str | None,
          size: tuple[int, int]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(streamlit_command([str(run)], str(run.parent), port), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    written = []
    try:
        wait_healthy(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            view = browser.new_page(viewport={"width": size[0], "height": size[1]})
            for step, name in zip(steps, names):
                view.goto(f"{url}/{page}?run={run.name}&step={step}")
                view.wait_for_function(IDLE, timeout=120_000)
                if tab:
                    view.get_by_role("tab", name=tab).click()
                    view.wait_for_function(IDLE, timeout=120_000)
                view.wait_for_timeout(1500)  # the charts' last layout pass
                path = out / f"{page}_{name}.png"
                view.screenshot(path=str(path))
                shrink(path)
                written.append(path)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return written


def shrink(path: Path) -> None:
    """Rewrite the PNG with a 256-colour palette (Pillow, a Streamlit dependency): about a third of the size,
    and the charts' flat colours survive it."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--page", default="fourier", help="url path of the page (overview, fourier, attention, ...)")
    ap.add_argument("--steps", required=True, help="comma-separated steps")
    ap.add_argument("--names", help="comma-separated file name suffixes (default: the steps)")
    ap.add_argument("--tab", help="a tab of the page to open first")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--size", default="1500x1900", help="viewport WIDTHxHEIGHT")
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    names = args.names.split(",") if args.names else [str(s) for s in steps]
    if len(names) != len(steps):
        ap.error(f"--names has {len(names)} entries for {len(steps)} steps")
    w, h = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    for path in shoot(args.run.resolve(), args.page, steps, names, args.out, args.tab, (w, h)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
