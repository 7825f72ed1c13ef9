"""Sweeps page: pick a sweep under the runs root; see its phase diagram, steps to grok and
critical training fraction (the plots of ``grokscope sweep plot``), and a table of members,
each linking to its run (``?run=<run>`` opens it in the run pages).

The entrypoint (``apps/dashboard.py``) adds this page to ``st.navigation`` through :func:`render`.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import streamlit as st

from apps import sweep_plots
from apps.ui import PLOTLY_KW
from interp.errors import StoreError
from interp.store import DEFAULT_ROOT
from interp.sweep import OUTCOMES, SUMMARY_FILE, Sweep, find_sweeps, format_value
from probes.sweep_summary import summarize

RUN_PAGE = "./"  # the default page (Overview) is served at the app's root, not at /overview (issue 14)


def _root() -> str:
    """The dashboard's runs root (from its page context or arguments), else checkpoints/."""
    try:
        from apps import state

        ctx = st.session_state.get(state.CTX_KEY)
        return ctx.root if ctx is not None else state.parse_args()[1]
    except Exception:  # used outside the dashboard
        return os.environ.get("GROKSCOPE_ROOT", str(DEFAULT_ROOT))


def _sig(path: Path) -> tuple:
    """File signature of a sweep's members (metrics and run.json), so the cache sees training progress."""
    out = []
    for f in sorted([*path.glob("*/metrics.parquet"), *path.glob("*/run.json"), path / "sweep.json"]):
        try:
            s = f.stat()
            out.append((str(f), s.st_mtime_ns, s.st_size))
        except OSError:
            pass
    return tuple(out)


@st.cache_data(max_entries=16, show_spinner="Summarising the sweep…")
def _summary(path: str, delay_factor: float, sig: tuple) -> pd.DataFrame:
    return summarize(path, delay_factor=delay_factor)


def run_link(run_path: str, root: str) -> str:
    """Relative URL of the run page with ``run=<run path relative to the root>``."""
    try:
        label = str(Path(run_path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        label = run_path
    return f"{RUN_PAGE}?run={quote(label)}"


def _open_run(run_path: str) -> None:
    """Button callback: select the run in the shared sidebar and go to the run pages."""
    ss = st.session_state
    try:
        from apps import state

        runs = st.session_state[state.CTX_KEY].runs
        match = next((r for r in runs if Path(r).resolve() == Path(run_path).resolve()), run_path)
    except Exception:
        match = run_path
    ss["run"] = match
    ss.pop("step", None)
    st.query_params["run"] = match
    ss["_sweeps_switch"] = True


def members_table(df: pd.DataFrame, params: list[str], root: str) -> pd.DataFrame:
    """The rows shown in the page's table: parameters, outcome, steps, losses, link."""
    def steps(v):
        return None if pd.isna(v) else int(v)

    out = pd.DataFrame({p: [format_value(v) for v in df[p]] for p in params})
    out["outcome"] = df["outcome"]
    out["train 100% at"] = [steps(v) for v in df.get("memorized_step", pd.Series([None] * len(df)))]
    out["test 99% at"] = [("did not grok" if steps(v) is None else str(steps(v)))
                          for v in df.get("grokked_step", pd.Series([None] * len(df)))]
    for col in ("train_loss", "test_loss", "wall_time"):
        if col in df:
            out[col.replace("_", " ")] = df[col]
    if "key_freqs" in df:
        out["key freqs"] = [" ".join(str(int(k)) for k in v) if v is not None and len(v) else ""
                            for v in df["key_freqs"]]
    out["run"] = [run_link(r, root) for r in df["run"]]
    return out


def _plots(df: pd.DataFrame, grid: dict) -> None:
    """The phase diagram and steps-to-grok side by side, then the critical fraction with its fits."""
    figs = [("phase", sweep_plots.fig_phase_diagram(df, grid)),
            ("steps", sweep_plots.fig_steps_to_grok(df, grid))]
    crit = sweep_plots.fig_critical_fraction(df, grid)
    shown = [(k, f) for k, f in figs if f is not None]
    for i in range(0, len(shown), 2):
        row = st.columns(2)
        for col, (key, fig) in zip(row, shown[i:i + 2]):
            with col:
                st.plotly_chart(fig, key=f"sweeps_{key}", **PLOTLY_KW)
    if crit is not None:
        fig, fits = crit
        st.plotly_chart(fig, key="sweeps_critical", **PLOTLY_KW)
        for f in fits:
            st.caption(f"fit f_c ≈ c·ln(p)/p ({f['group']}): **c = {f['c']:.4g}** from {f['n']} points, "
                       f"RMS residual {f['rms']:.3g}")
    if not shown and crit is None:
        st.info("This grid has a single swept parameter besides seeds: no phase diagram. "
                "The table below has every member.")


def render() -> None:
    st.title("Sweeps")
    root = _root()
    sweeps = find_sweeps(root)
    if not sweeps:
        st.info(f"No sweeps under {root}/. Start one with "
                "`grokscope sweep --preset tiny --grid frac_train=0.3,0.5 weight_decay=1,3 seed=0..1`.")
        return
    labels = {str(p): str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in sweeps}
    path = st.selectbox("Sweep", list(labels), format_func=labels.get, key="sweep_dir",
                        help="directories holding a sweep.json under the runs root")
    try:
        sweep = Sweep.open(path)
    except StoreError as e:
        st.error(str(e))
        return
    c1, c2 = st.columns([3, 1])
    c1.caption(f"{len(sweep.members)} members · base preset {sweep.preset or 'custom'} · grid "
               + " · ".join(f"{k} ∈ {{{', '.join(format_value(v) for v in vs)}}}" for k, vs in sweep.grid.items()))
    delay = c2.number_input("comprehension factor", min_value=1.0, max_value=100.0, value=2.0, step=0.5,
                            help="a run counts as comprehension (no delay) if test acc reaches 99% by this "
                                 "factor × the step train acc reached 100%, plus one evaluation interval")
    df = _summary(str(sweep.path), float(delay), _sig(sweep.path))

    counts = df["outcome"].value_counts()
    cols = st.columns(len(OUTCOMES) + 1)
    cols[0].metric("members", len(df))
    for col, outcome in zip(cols[1:], OUTCOMES):
        col.metric(sweep_plots.OUTCOME_LABELS[outcome], int(counts.get(outcome, 0)))

    _plots(df, sweep.grid)

    st.subheader("Members")
    params = list(sweep.grid)
    table = members_table(df, params, root)
    st.dataframe(table, hide_index=True, key="sweeps_table", column_config={
        "run": st.column_config.LinkColumn("run", display_text="open ↗", help="open this run in the run pages"),
    })
    names = list(df["name"])
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox("Member", names, key="sweeps_member", help="select a member to open in the run pages")
    run_path = df.loc[df["name"] == pick, "run"].iloc[0]
    c2.button("Open run", key="sweeps_open", on_click=_open_run, args=(run_path,),
              disabled=df.loc[df["name"] == pick, "status"].iloc[0] == "missing")
    if st.session_state.pop("_sweeps_switch", False):
        try:
            st.switch_page(str(Path(__file__).with_name("page_overview.py")))
        except Exception:
            st.info(f"Selected {pick}; open the Overview page to see it.")
    st.caption(f"Summary table: {sweep.path / SUMMARY_FILE}")
