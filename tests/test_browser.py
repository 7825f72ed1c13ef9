"""The dashboard in a real browser: ``streamlit run`` on a free localhost port, driven by Playwright
with Debian's Chromium. Loads the overview, moves the step selector, clicks a curve on every run page
that has one (the URL's ``step=`` and the page caption follow the click), plays the client-side
animations and counts their frames, and opens a sweep member from both entry points of the Sweeps
page (the members table's link and the Member picker). Saves a screenshot of some pages under
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
from urllib.parse import parse_qs, urlparse

import pytest

from apps import data
from apps.cli.app import streamlit_command
from interp import Run, preset
from interp import sweep as sw
from tests.bench.browser import CHROMIUM_ARGS, IDLE, free_port, wait_healthy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PLOT = ".js-plotly-plot"
#: two 60-step tiny members on p = 23 (as in tests/test_sweep.py): seconds to train
SWEEP_BASE = preset("tiny").replace(p=23, n_steps=60, ckpt_dense_until=20, ckpt_log_count=5, ckpt_every=20)


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
def sweep_members(probed_run) -> list[tuple[str, int]]:
    """A two-member sweep under the served runs root (``ROOT/sweeps/wd``): each member's run label (its path
    relative to the root, as the dashboard names it) and last step."""
    root = probed_run.path.parent
    df = sw.run(SWEEP_BASE, ["weight_decay=1,3"], out=root / "sweeps" / "wd", backend="local", progress=False,
                preset_name="tiny")
    return [(str(Path(r).relative_to(root)), Run.open(r).steps[-1]) for r in df["run"]]


@pytest.fixture(scope="module")
def server(probed_run, sweep_members, tmp_path_factory):
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


def caption(page) -> str:
    return page.locator("[data-testid='stCaptionContainer']").first.inner_text()


def caption_step(page) -> int:
    return int(re.search(r"step (\d+)", caption(page)).group(1))


def url_step(page) -> int:
    return int(re.search(r"[?&]step=(\d+)", page.url).group(1))


def open_page(page, name: str, slug: str, step: int, min_plots: int) -> None:
    """Switch to the run page ``name`` in the navigation; the selected step survives the switch."""
    page.get_by_role("link", name=name, exact=True).click()
    page.wait_for_url(re.compile(rf"/{slug}\b"), timeout=60_000)
    page.get_by_role("heading", name=name, exact=True).wait_for(timeout=60_000)
    page.wait_for_function(IDLE, timeout=120_000)
    wait_plots(page, min_plots)
    assert caption_step(page) == step and url_step(page) == step, (name, caption(page), page.url)


STEP_MOVED = """(s) => { const c = document.querySelector("[data-testid='stCaptionContainer']");
    return !!c && !new RegExp('step ' + s + '\\\\b').test(c.innerText)
      && !new RegExp('[?&]step=' + s + '(&|$)').test(location.search); }"""


def click_step_chart(page, title: str | re.Pattern, steps: list[int], where: str) -> int:
    """Click the chart titled ``title`` (x axis: training step) at a quarter of its width from the side
    away from the selected step; wait until the page's caption and the URL's ``step=`` name another saved
    step, and return it. Prints how long the click took to redraw the page."""
    before = caption_step(page)
    plot = page.locator(PLOT).filter(has=page.locator(".gtitle", has_text=title)).first
    plot.scroll_into_view_if_needed()
    box = plot.locator(".nsewdrag").first.bounding_box()
    late = (before - steps[0]) / (steps[-1] - steps[0]) > 0.5
    # Plotly's drag layer keeps the focus where it was; a step slider still focused from the keyboard
    # puts its own value back when the page redraws, so take the focus off it first
    page.evaluate("document.activeElement && document.activeElement.blur()")
    t0 = time.monotonic()
    page.mouse.click(box["x"] + box["width"] * (0.25 if late else 0.75), box["y"] + box["height"] * 0.5)
    page.wait_for_function(STEP_MOVED, arg=before, timeout=60_000)
    page.wait_for_function(IDLE, timeout=60_000)
    print(f"click-to-step on {where}: {time.monotonic() - t0:.2f} s")
    after = caption_step(page)
    assert after != before and after in steps, (where, title, before, after)
    assert url_step(page) == after, (where, page.url)
    return after


def play_and_count_frames(page, seconds: float = 3.0) -> int:
    """Press Play on the first animated chart of the page; the frames Plotly draws in ``seconds``."""
    anim = page.locator(PLOT).filter(has=page.locator(".updatemenu-button")).first
    anim.wait_for(timeout=60_000)
    page.evaluate("""(el) => { window.__frames = 0;
        el.on('plotly_animatingframe', () => { window.__frames += 1; }); }""", anim.element_handle())
    anim.locator(".updatemenu-button").first.click()
    page.wait_for_timeout(seconds * 1000)
    return page.evaluate("window.__frames")


def open_member_from_table(page, row: int):
    """Click the "open ↗" link of the members table's ``row``: the data grid draws on a canvas, so the
    link is found by moving the mouse along the row until the grid shows the link cursor. Returns the
    tab the link opens."""
    canvas = page.locator("[data-testid='stDataFrame'] [data-testid='data-grid-canvas']").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    row_h = box["height"] / (int(canvas.locator("table").get_attribute("aria-rowcount")))  # header + rows
    y = box["y"] + row_h * (row + 1.5)
    for x in range(int(box["x"] + box["width"]) - 4, int(box["x"]), -8):  # the link column is the last
        page.mouse.move(x, y)
        if canvas.evaluate("c => c.style.cursor") == "pointer":
            break
    else:
        raise AssertionError("no link in the members table")
    with page.expect_popup(timeout=60_000) as popup:
        page.mouse.click(x, y)
    return popup.value


def assert_shows_run(page, label: str, last_step: int, first: str) -> None:
    """The Overview shows the run ``label`` at its last step (caption and URL), not the first run on offer."""
    page.get_by_role("heading", name="Overview", exact=True).wait_for(timeout=60_000)
    page.wait_for_function(IDLE, timeout=120_000)
    wait_plots(page, 4)
    assert label != first
    assert caption(page).startswith(f"{label} · step {last_step} ·"), caption(page)
    query = parse_qs(urlparse(page.url).query)
    assert query["run"] == [label] and query["step"] == [str(last_step)], page.url


def test_dashboard_in_chromium(server, probed_run, sweep_members, out_dir):
    from playwright.sync_api import sync_playwright

    steps = probed_run.steps
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2400})
            errors: list[str] = []
            page.context.on("page", lambda p: p.on("pageerror", lambda e: errors.append(str(e))))
            page.on("pageerror", lambda e: errors.append(str(e)))
            outside: list[str] = []  # offline-clean: no request may leave the machine
            page.context.route(re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/]).*"),
                               lambda route: (outside.append(route.request.url), route.abort()))

            page.goto(server)
            wait_plots(page, 4)
            assert page.get_by_role("heading", name="Overview").count() == 1
            assert caption_step(page) == steps[-1]
            first_run = caption(page).split(" · ")[0]
            assert page.locator(f"{PLOT} .main-svg path.js-line").count() >= 4  # the curves are drawn
            nav = ["Overview", "Fourier", "Progress measures", "Attention", "Checkpoint diff", "Compare runs",
                   "Theories", "Sweeps"]
            for name in nav:
                assert page.get_by_role("link", name=name, exact=True).count() == 1, name
            page.screenshot(path=str(out_dir / "overview.png"))

            assert page.get_by_text("Deploy", exact=True).count() == 0  # toolbarMode = minimal

            # a click on a curve selects the nearest saved step (URL and caption follow)
            clicked = click_step_chart(page, re.compile("^Loss$"), steps, "Overview")

            # the phase buttons jump to the grokking step
            grok = page.get_by_role("button", name=re.compile(r"^grokked · \d+"))
            if grok.count():
                grok.first.click()
                page.wait_for_function(f"!location.search.includes('step={clicked}')", timeout=60_000)
                wait_plots(page, 4)

            # move the shared step selector one checkpoint left with the keyboard
            step = steps[steps.index(caption_step(page)) - 1]
            page.get_by_role("slider").first.focus()
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(f"location.search.includes('step={step}')", timeout=60_000)
            wait_plots(page, 4)
            assert caption_step(page) == step

            open_page(page, "Fourier", "fourier", step, 8)  # the "Frequencies" tab is open
            assert page.locator(f"{PLOT} .heatmaplayer image, {PLOT} .hm image").count() >= 2  # heatmaps render
            page.screenshot(path=str(out_dir / "fourier.png"))
            # a frequency × step heatmap selects the nearest saved step, as the curves do
            step = click_step_chart(page, "W_E norm per frequency", steps, "Fourier (heatmap)")
            step = click_step_chart(page, "Sparsity in the Fourier basis", steps, "Fourier")

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
            wait_plots(page, 2)  # the tab holds the timeline and the animation
            frames = play_and_count_frames(page)
            print(f"neuron animation: {frames} frames in 3 s")
            assert frames >= 15

            open_page(page, "Progress measures", "progress", step, 4)
            step = click_step_chart(page, "Restricted / excluded loss — logit convention", steps, "Progress measures")

            open_page(page, "Attention", "attention", step, 2)
            page.get_by_role("tab", name="Sparsity and sinks over training").click()  # a lazy tab
            page.wait_for_function(IDLE, timeout=60_000)
            wait_plots(page, 4)
            step = click_step_chart(page, "Readout attention: entropy", steps, "Attention")
            # the per-head attention frequency, animated from the probe's per-step data: >= 5 frames per second
            page.get_by_text("Watch it form: per-head attention", exact=False).first.click()
            frames = play_and_count_frames(page)
            print(f"attention animation: {frames} frames in 3 s")
            assert frames >= 15
            page.screenshot(path=str(out_dir / "attention.png"))

            # Checkpoint diff: the loss curve with A and B marked moves the step (the embedded report's charts,
            # a static HTML report in an iframe, do not select one)
            open_page(page, "Checkpoint diff", "diff", step, 1)
            step = click_step_chart(page, "Loss, with checkpoints A and B", steps, "Checkpoint diff")

            open_page(page, "Compare runs", "compare", step, 1)
            step = click_step_chart(page, "across runs", steps, "Compare runs")
            open_page(page, "Theories", "theories", step, 1)
            step = click_step_chart(page, "Measures of progress, normalised", steps, "Theories")

            # a sweep member opens in the run pages from the members table's link (in a new tab) ...
            page.get_by_role("link", name="Sweeps", exact=True).click()
            page.get_by_role("heading", name="Sweeps", exact=True).wait_for(timeout=60_000)
            page.wait_for_function(IDLE, timeout=120_000)
            (label_a, last_a), (label_b, last_b) = sweep_members
            member = open_member_from_table(page, 0)
            assert_shows_run(member, label_a, last_a, first_run)
            member.close()
            # ... and from the Member picker and the "Open run" button
            page.locator("[data-testid='stSelectbox']").filter(has_text="Member").click()
            page.get_by_role("option", name=Path(label_b).name, exact=True).click()
            page.wait_for_function(IDLE, timeout=60_000)
            page.get_by_role("button", name="Open run", exact=True).click()
            assert_shows_run(page, label_b, last_b, first_run)
            page.screenshot(path=str(out_dir / "sweep-member.png"))
            assert not errors, errors
            assert not outside, f"requests left the machine: {outside}"
        finally:
            browser.close()
    for name in ("overview", "fourier", "attention"):
        assert (out_dir / f"{name}.png").stat().st_size > 20_000
