"""The dashboard in a real browser: ``streamlit run`` on a free localhost port, driven by Playwright
with Debian's Chromium. Loads the overview, moves the step selector, switches to the Fourier and
Attention pages, checks that the Plotly charts render and saves a screenshot of each page under
``test-output/browser/`` (``$TEST_OUTPUT/browser`` if set).

Needs ``chromium`` on the PATH (``apt-get install chromium``; Playwright's own browser download is
not used). Skipped without it locally; under CI (``CI`` set) a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from apps import data
from apps.cli.app import streamlit_command
from interp import Run
from tests.bench.browser import CHROMIUM_ARGS, free_port, wait_healthy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PLOT = ".js-plotly-plot"


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        msg = "chromium is not installed (apt-get install -y chromium); the browser test needs it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def probed_run(tiny_run_path, tmp_path_factory) -> Run:
    dst = tmp_path_factory.mktemp("browser") / "tiny"
    shutil.copytree(tiny_run_path, dst)
    data.compute_probes(str(dst))
    return Run.open(dst)


@pytest.fixture(scope="module")
def server(probed_run, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    cmd = streamlit_command([str(probed_run.path)], str(probed_run.path.parent), port)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def out_dir() -> Path:
    d = Path(os.environ.get("TEST_OUTPUT", REPO / "test-output")) / "browser"
    d.mkdir(parents=True, exist_ok=True)
    return d


def wait_plots(page, n: int, timeout: float = 120_000) -> None:
    page.wait_for_function(f"document.querySelectorAll('{PLOT} .main-svg').length >= {n}", timeout=timeout)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def caption_step(page) -> int:
    text = page.locator("[data-testid='stCaptionContainer']").first.inner_text()
    return int(re.search(r"step (\d+)", text).group(1))


def play_and_count_frames(page, seconds: float = 3.0) -> int:
    """Press Play on the first animated chart of the page; the frames Plotly draws in ``seconds``."""
    anim = page.locator(PLOT).filter(has=page.locator(".updatemenu-button")).first
    anim.wait_for(timeout=60_000)
    page.evaluate("""(el) => { window.__frames = 0;
        el.on('plotly_animatingframe', () => { window.__frames += 1; }); }""", anim.element_handle())
    anim.locator(".updatemenu-button").first.click()
    page.wait_for_timeout(seconds * 1000)
    return page.evaluate("window.__frames")


def test_dashboard_in_chromium(server, probed_run, out_dir):
    from playwright.sync_api import sync_playwright

    steps = probed_run.steps
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2400})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            outside: list[str] = []  # offline-clean: no request may leave the machine
            page.route(re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/]).*"),
                       lambda route: (outside.append(route.request.url), route.abort()))

            page.goto(server)
            wait_plots(page, 4)
            assert page.get_by_role("heading", name="Overview").count() == 1
            assert caption_step(page) == steps[-1]
            assert page.locator(f"{PLOT} .main-svg path.js-line").count() >= 4  # the curves are drawn
            nav = ["Overview", "Fourier", "Progress measures", "Attention", "Checkpoint diff", "Compare runs"]
            if (REPO / "apps" / "page_sweeps.py").exists():
                nav.append("Sweeps")
            for name in nav:
                assert page.get_by_role("link", name=name, exact=True).count() == 1, name
            page.screenshot(path=str(out_dir / "overview.png"))

            assert page.get_by_text("Deploy", exact=True).count() == 0  # toolbarMode = minimal

            # click the loss curve near the first third of the x axis: the step follows the click
            before = caption_step(page)
            box = page.locator(f"{PLOT} .nsewdrag").first.bounding_box()
            t0 = time.monotonic()
            page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
            page.wait_for_function(f"!location.search.includes('step={before}')", timeout=60_000)
            wait_plots(page, 4)
            print(f"click-to-step on Overview: {time.monotonic() - t0:.2f} s")
            clicked = caption_step(page)
            assert clicked != before and clicked in steps

            # the phase buttons jump to the grokking step
            grok = page.get_by_role("button", name=re.compile(r"^grokked · \d+"))
            if grok.count():
                grok.first.click()
                page.wait_for_function(f"!location.search.includes('step={clicked}')", timeout=60_000)
                wait_plots(page, 4)

            # move the shared step selector one checkpoint left with the keyboard
            prev = steps[steps.index(caption_step(page)) - 1]
            page.get_by_role("slider").first.focus()
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(f"location.search.includes('step={prev}')", timeout=60_000)
            wait_plots(page, 4)
            assert caption_step(page) == prev

            page.get_by_role("link", name="Fourier").click()
            page.wait_for_url(re.compile(r"/fourier"), timeout=60_000)
            page.get_by_role("heading", name="Fourier", exact=True).wait_for(timeout=60_000)
            wait_plots(page, 8)
            assert caption_step(page) == prev  # the step survives the page switch
            assert f"step={prev}" in page.url
            assert page.locator(f"{PLOT} .heatmaplayer image, {PLOT} .hm image").count() >= 2  # heatmaps render
            page.screenshot(path=str(out_dir / "fourier.png"))

            # a frequency × step heatmap: a click selects the nearest saved step, as on the curves
            heat = page.locator(PLOT).filter(has=page.locator(".heatmaplayer image, .hm image")).first
            box = heat.locator(".nsewdrag").first.bounding_box()
            # Plotly's drag layer keeps the focus where it was; a step slider still focused from the keyboard
            # puts its own value back when the page redraws, so take the focus off it first
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.mouse.click(box["x"] + box["width"] * 0.15, box["y"] + box["height"] * 0.5)
            page.wait_for_function("""(s) => { const c = document.querySelector("[data-testid='stCaptionContainer']");
                return !!c && !new RegExp('step ' + s + '\\\\b').test(c.innerText); }""", arg=prev, timeout=60_000)
            wait_plots(page, 8)
            heat_step = caption_step(page)
            assert heat_step != prev and heat_step in steps
            page.get_by_role("slider").first.focus()  # back to where the test was
            while caption_step(page) != prev:
                page.keyboard.press("ArrowLeft" if caption_step(page) > prev else "ArrowRight")
                page.wait_for_timeout(300)
                wait_plots(page, 8)

            # client-side animation: Play in the browser, count the frames drawn in 3 s
            page.get_by_role("tab", name="Watch it form").click()  # a lazy tab: its content runs when opened
            page.get_by_text("W_E norms", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("W_E norms", exact=True).first.click()
            frames = play_and_count_frames(page)
            print(f"animation: {frames} frames in 3 s")
            assert frames >= 15  # >= 5 frames per second

            # one neuron's activation over (a, b), a heatmap per probed step (fourier.neuron_acts): >= 5 frames/s
            page.get_by_text("one neuron", exact=True).first.click()
            page.locator(PLOT).filter(has_text="activation over (a, b)").first.wait_for(timeout=60_000)
            wait_plots(page, 8)
            frames = play_and_count_frames(page)
            print(f"neuron animation: {frames} frames in 3 s")
            assert frames >= 15

            page.get_by_role("link", name="Attention").click()
            page.wait_for_url(re.compile(r"/attention"), timeout=60_000)
            page.get_by_role("heading", name="Attention", exact=True).wait_for(timeout=60_000)
            wait_plots(page, 4)
            assert caption_step(page) == prev

            # the per-head attention frequency, animated from the probe's per-step data: >= 5 frames per second
            page.get_by_text("Watch it form: per-head attention", exact=False).first.click()
            frames = play_and_count_frames(page)
            print(f"attention animation: {frames} frames in 3 s")
            assert frames >= 15
            page.screenshot(path=str(out_dir / "attention.png"))
            assert not errors, errors
            assert not outside, f"requests left the machine: {outside}"
        finally:
            browser.close()
    for name in ("overview", "fourier", "attention"):
        assert (out_dir / f"{name}.png").stat().st_size > 20_000
