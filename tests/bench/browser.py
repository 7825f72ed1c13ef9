"""Dashboard interactions in a real browser: the same synthetic 300-checkpoint ``nanda`` run as the
``dashboard`` section (probed), served by ``streamlit run`` (headless, a free localhost port) and driven by
Debian's Chromium (``/usr/bin/chromium``) through Playwright.

Measured, with Streamlit's caches warm from a first visit of every page (except the first load):

* first load: ``page.goto`` right after the server answers its health check, until the Overview is drawn
  (a server started the way ``grokscope app`` starts it: ``python -m apps.serve``, which imports torch and
  Plotly before serving, where the checkout has it);
* page switch: a click on the page's link in the navigation until the page is drawn (pages in tabs, of which
  only the open one is drawn: with the first tab open);
* tab switch: on pages in tabs, a click on another tab (from the first) until it is drawn;
* step change: one checkpoint left with the keyboard on the step slider (a step not shown before), and
  back (a step shown before), until the page's caption names the new step.

"Drawn" means: the page's heading and caption are there, the script has finished
(``data-test-script-state="notRunning"``), no element is stale (left from the previous run), at least as
many Plotly charts are rendered as on the warm visit, and two animation frames have passed. ``value`` is
the worst of the repeats (rows also give ``median`` and ``n``).

``GROKSCOPE_BENCH_APP`` (a checkout of the repository) serves another version of the dashboard, for a
before/after comparison on the same run.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from tests.bench.common import at_most, row
from tests.bench.dashboard import prepare

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
PAGES = [("overview", "Overview"), ("fourier", "Fourier"), ("progress", "Progress measures"),
         ("attention", "Attention"), ("diff", "Checkpoint diff"), ("compare", "Compare runs"),
         ("theories", "Theories")]
INTERACTION_S, FIRST_LOAD_S = 1.0, 3.0
PLOT = ".js-plotly-plot .main-svg"
IDLE = """() => { const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector('[data-stale="true"]')
    && !document.querySelector('[data-testid="stStatusWidget"]'); }"""
TAB_DRAWN = """([name, n]) => { const tab = [...document.querySelectorAll('[role=tab]')]
    .find(t => t.innerText.trim() === name); const panel = document.querySelector('[role=tabpanel]');
  return !!tab && tab.getAttribute('aria-selected') === 'true' && !!panel && panel.innerText.length > 0
    && panel.querySelectorAll('""" + PLOT + """').length >= n; }"""
FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app: Path, run_path: Path, port: int, log: Path) -> subprocess.Popen:
    """``streamlit run APP/apps/dashboard.py -- RUN`` on 127.0.0.1:port (the settings ``grokscope app`` uses)."""
    launcher = "apps.serve" if (app / "apps" / "serve.py").exists() else "streamlit"  # as `grokscope app`
    cmd = [sys.executable, "-m", launcher, "run", str(app / "apps" / "dashboard.py"),
           "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
           "--server.fileWatcherType", "none", "--",
           "--root", str(run_path.parent), str(run_path)]
    env = {**os.environ, "PYTHONPATH": str(app), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout} s")


class Driver:
    """One Chromium page on the dashboard, with the waits that define "drawn"."""

    def __init__(self, page, timeout_ms: float = 120_000):
        self.page, self.timeout = page, timeout_ms
        self.plots: dict[str, int] = {}  # plots drawn on the warm visit of each page

    def drawn(self, title: str, step: int | None = None, min_plots: int = 0) -> None:
        p = self.page
        p.get_by_role("heading", name=title, exact=True).wait_for(timeout=self.timeout)
        if step is not None:
            p.wait_for_function("""(s) => { const c = document.querySelector("[data-testid='stCaptionContainer']");
                return !!c && new RegExp('step ' + s + '\\\\b').test(c.innerText); }""", arg=step,
                                timeout=self.timeout)
        p.wait_for_function(IDLE, timeout=self.timeout)
        if min_plots:
            p.wait_for_function(f"document.querySelectorAll('{PLOT}').length >= {min_plots}", timeout=self.timeout)
        p.evaluate(FRAMES)

    def step(self) -> int:
        text = self.page.locator("[data-testid='stCaptionContainer']").first.inner_text()
        return int(re.search(r"step (\d+)", text).group(1))

    def timed(self, action, title: str, slug: str, step: int | None = None) -> float:
        t0 = time.perf_counter()
        action()
        self.drawn(title, step, self.plots.get(slug, 0))
        return time.perf_counter() - t0

    def switch(self, slug: str, title: str) -> float:
        p = self.page
        return self.timed(lambda: p.get_by_role("link", name=title, exact=True).click(), title, slug)

    def tab(self, slug: str, name: str, warm: bool = False) -> float:
        """Open the page's tab ``name`` (a lazy tab: its panel is emptied on the click, then filled by the
        rerun) until its panel shows content and the plots of the warm visit (which records their number)."""
        p, key = self.page, f"{slug}/{name}"
        t0 = time.perf_counter()
        p.get_by_role("tab", name=name, exact=True).click()
        p.wait_for_function(TAB_DRAWN, arg=[name, self.plots.get(key, 0)], timeout=self.timeout)
        p.wait_for_function(IDLE, timeout=self.timeout)
        p.evaluate(FRAMES)
        elapsed = time.perf_counter() - t0
        if warm:  # let every chart of the tab arrive, then count them
            p.wait_for_timeout(500)
            p.wait_for_function(IDLE, timeout=self.timeout)
            self.plots[key] = p.evaluate(f"document.querySelector('[role=tabpanel]').querySelectorAll('{PLOT}').length")
        return elapsed

    def key_step(self, slug: str, title: str, key: str, target: int) -> float:
        slider = self.page.get_by_role("slider").first
        return self.timed(lambda: (slider.focus(), self.page.keyboard.press(key)), title, slug, target)


def _stats(name: str, values: list[float], limit: float) -> dict:
    extra = {"median": round(float(np.median(values)), 3), "n": len(values)}
    return at_most(name, round(max(values), 3), "s", limit, **extra)


def time_browser(url: str, steps: list[int], repeats: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows: list[dict] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.route(re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/]).*"), lambda route: route.abort())
            d = Driver(page)
            t0 = time.perf_counter()
            page.goto(url)
            d.drawn("Overview", steps[-1], 4)
            rows.append(at_most("first load after server start, Overview", round(time.perf_counter() - t0, 3), "s",
                                FIRST_LOAD_S))
            pages = [(s, t) for s, t in PAGES if page.get_by_role("link", name=t, exact=True).count()]
            for slug, title in pages[1:] + pages[:1]:  # warm visit: caches, and the number of charts drawn
                d.switch(slug, title)
                d.plots[slug] = page.locator(PLOT).count()
            switch: dict[str, list[float]] = {s: [] for s, _ in pages}
            for _ in range(repeats):
                for slug, title in pages[1:] + pages[:1]:
                    switch[slug].append(d.switch(slug, title))
            rows += [_stats(f"page switch to {t}", switch[s], INTERACTION_S) for s, t in pages]
            rows += time_tabs(d, pages, repeats)
            for slug, title in pages:
                d.switch(slug, title)
                new, back = [], []
                for _ in range(repeats):
                    here = d.step()
                    prev = steps[steps.index(here) - 1]
                    new.append(d.key_step(slug, title, "ArrowLeft", prev))
                    back.append(d.key_step(slug, title, "ArrowRight", here))
                    d.key_step(slug, title, "ArrowLeft", prev)  # move on: the next repeat starts one further left
                rows.append(_stats(f"step change on {title} (new step)", new, INTERACTION_S))
                rows.append(_stats(f"step change on {title} (step shown before)", back, INTERACTION_S))
        finally:
            browser.close()
    return rows


def time_tabs(d: Driver, pages: list[tuple[str, str]], repeats: int) -> list[dict]:
    """Each tab of the pages that have tabs, opened from the page's first tab (warm: a first visit of each)."""
    rows = []
    for slug, title in pages:
        d.switch(slug, title)
        names = [n.strip() for n in d.page.get_by_role("tab").all_inner_texts()]
        for name in names[1:] + names[:1]:  # warm visit: caches, and the number of charts drawn
            d.tab(slug, name, warm=True)
        for name in names[1:]:
            times = []
            for _ in range(repeats):
                times.append(d.tab(slug, name))
                d.tab(slug, names[0])
            rows.append(_stats(f"tab switch on {title} to {name}", times, INTERACTION_S))
    return rows


def bench(quick: bool, preset_name: str = "nanda", workdir: str | Path = "bench-results/dashboard",
          repeats: int | None = None) -> list[dict]:
    """Build (or reuse) the probed synthetic run, serve it, and time the dashboard in Chromium."""
    if not Path(CHROMIUM).exists() or not _has_playwright():
        return [row("browser: skipped (needs /usr/bin/chromium and playwright)", float("nan"), "")]
    n_checkpoints = 100 if quick else 300
    repeats = repeats or (2 if quick else 3)
    run = prepare(workdir, preset_name, n_checkpoints)
    app = Path(os.environ.get("GROKSCOPE_BENCH_APP", REPO)).resolve()
    port = free_port()
    log = Path(workdir) / "browser-server.log"
    proc = start_server(app, Path(run.path).resolve(), port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        rows = time_browser(url, run.steps, repeats)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    load = os.getloadavg()
    tag = f" [{preset_name}, {len(run.steps)} checkpoints, Chromium]"
    for r in rows:
        r["name"] += tag
        r["load"] = [round(x, 2) for x in load]
    return [*rows, row("browser: load average (1, 5, 15 min) after the section", round(load[0], 2), "",
                       load=[round(x, 2) for x in load])]


def _has_playwright() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True
