"""grokscope dashboard: the Streamlit entrypoint (``grokscope app`` runs it).

    streamlit run apps/dashboard.py -- [RUN_DIR ...] [--root checkpoints/]

Draws the shared sidebar (run, step, play) and routes to one page module per view.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run apps/dashboard.py` puts apps/ on the path, not the repo
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from apps import state  # noqa: E402

HERE = Path(__file__).resolve().parent
PAGES = [  # (file, title, icon, url path)
    ("page_overview.py", "Overview", ":material/monitoring:", "overview"),
    ("page_fourier.py", "Fourier", ":material/graphic_eq:", "fourier"),
    ("page_progress.py", "Progress measures", ":material/trending_down:", "progress"),
    ("page_attention.py", "Attention", ":material/visibility:", "attention"),
    ("page_diff.py", "Checkpoint diff", ":material/difference:", "diff"),
    ("page_compare.py", "Compare runs", ":material/stacked_line_chart:", "compare"),
    ("page_theories.py", "Theories", ":material/balance:", "theories"),
]


def pages() -> list:
    out = [st.Page(HERE / f, title=t, icon=i, url_path=u, default=(n == 0))
           for n, (f, t, i, u) in enumerate(PAGES) if (HERE / f).exists()]
    if (HERE / "page_sweeps.py").exists():
        out.append(_sweeps_page())
    return out


def _sweeps_page():
    """The sweeps page (apps/page_sweeps.py, owned by the sweeps code) through its ``render()``."""
    try:
        from apps import page_sweeps

        render = page_sweeps.render
    except Exception as e:  # a broken module must not take the other pages down
        msg = f"The sweeps page could not be loaded: {e}"

        def render() -> None:
            st.title("Sweeps")
            st.error(msg)

    return st.Page(render, title="Sweeps", icon=":material/grid_view:", url_path="sweeps")


def main() -> None:
    st.set_page_config(page_title="grokscope", page_icon=":material/insights:", layout="wide")
    nav = st.navigation(pages())
    st.sidebar.markdown("**grokscope**")
    ctx = state.sidebar()
    if nav.url_path == "sweeps":  # sweeps list their own runs
        nav.run()
        return
    if ctx is None or ctx.step is None:
        st.stop()
    nav.run()
    state.advance(ctx.steps)


main()
