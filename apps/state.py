"""What every page shares: the run list, the selected run and step, and the play control.

The sidebar is drawn by the entrypoint (``apps/dashboard.py``) on every rerun, so its widgets
keep their values across page switches. The selected run and step are mirrored in the URL
(``?run=NAME&step=N``): a shared or reloaded link opens the same view, and a step that is not
a saved checkpoint snaps to the nearest one that is.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from apps import data
from interp.store import Run

PLAY_DELAYS = [0.25, 0.5, 1.0, 2.0]
CTX_KEY = "_grokscope_ctx"


@dataclass
class Ctx:
    """The page context: runs on offer, the selected run and step."""

    root: str
    runs: list[str]
    key: data.RunKey | None = None
    steps: list[int] = field(default_factory=list)
    step: int | None = None

    @property
    def path(self) -> str:
        assert self.key is not None
        return self.key.path

    @property
    def run(self) -> Run:
        assert self.key is not None
        return data.run_of(self.key)

    def label(self, path: str) -> str:
        return data.run_label(path, self.root)


def context() -> Ctx:
    """The context the entrypoint stored for this rerun."""
    return st.session_state[CTX_KEY]


# ------------------------------------------------------------------ inputs
def parse_args(argv: list[str] | None = None) -> tuple[tuple[str, ...], str]:
    """(run dirs, root) from the script arguments of ``streamlit run apps/dashboard.py -- ...``
    when the dashboard is the running script, else from ``GROKSCOPE_RUNS`` (os.pathsep-separated)
    and ``GROKSCOPE_ROOT``."""
    if argv is None:
        argv = sys.argv[1:] if Path(sys.argv[0]).name == "dashboard.py" else None
    env_runs = tuple(r for r in os.environ.get("GROKSCOPE_RUNS", "").split(os.pathsep) if r)
    env_root = os.environ.get("GROKSCOPE_ROOT", "checkpoints")
    if argv is None:
        return env_runs, env_root
    parser = argparse.ArgumentParser(prog="dashboard.py", add_help=False)
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--root", default=env_root)
    args, _ = parser.parse_known_args(argv)
    return tuple(args.runs) or env_runs, args.root


# ------------------------------------------------------------------ run picker
def _run_dir(ctx: Ctx, wanted: str | None) -> str | None:
    """``wanted`` (a path, or a path relative to the root) as one of ``ctx.runs``, adding it when it is a run
    directory under the root that was not listed (a sweep member opened while the command line named other
    runs); else None. A URL never reaches a directory outside the runs root."""
    if not wanted:
        return None
    root = Path(ctx.root).resolve()
    for cand in (Path(wanted), Path(ctx.root) / wanted):
        match = next((r for r in ctx.runs if Path(r).resolve() == cand.resolve()), None)
        if match is not None:
            return match
        if cand.resolve().is_relative_to(root) and (cand / "run.json").is_file():
            ctx.runs.append(str(cand))
            return str(cand)
    return None


def pick_run(ctx: Ctx) -> str | None:
    """The selected run directory. A ``?run=`` naming no run on offer (listed, or a run directory under
    the root) selects nothing (None): the caller says so, rather than silently showing another run."""
    ss = st.session_state
    if ss.get("run") not in ctx.runs:
        extra = _run_dir(ctx, ss.get("run"))
        if extra is not None:
            ss["run"] = extra
    if ss.get("run") not in ctx.runs and st.query_params.get("run") not in (None, *ctx.runs):
        _run_dir(ctx, st.query_params.get("run"))
    labels = {p: ctx.label(p) for p in ctx.runs}
    if ss.get("run") not in ctx.runs:
        wanted = st.query_params.get("run")
        by_label = {v: k for k, v in labels.items()}
        ss["run"] = by_label.get(wanted, wanted if wanted in ctx.runs else None if wanted else ctx.runs[0])
    path = st.sidebar.selectbox("Run", ctx.runs, format_func=labels.get, key="run", placeholder="choose a run",
                                help="run directories found under the root (or given on the command line)")
    if path is not None:
        st.query_params["run"] = labels[path]
    return path


# ------------------------------------------------------------------ step selector
def nearest(steps: list[int], step: int) -> int:
    return min(steps, key=lambda s: (abs(s - step), s))


def bad_steps(path: str) -> dict[int, str]:
    """Checkpoints of ``path`` found corrupt in this session (step -> message)."""
    return st.session_state.setdefault("_bad_steps", {}).setdefault(path, {})


def _initial_step(steps: list[int]) -> tuple[int, str | None]:
    """The step to start from: the URL's ``step=`` snapped to a saved step, else the last step."""
    raw = st.query_params.get("step")
    if raw is None:
        return steps[-1], None
    try:
        wanted = int(raw)
    except ValueError:
        return steps[-1], f"`step={raw}` in the URL is not a number; showing the last saved step {steps[-1]}"
    snapped = nearest(steps, wanted)
    note = None if snapped == wanted else (f"step {wanted} is not a saved checkpoint; "
                                           f"showing the nearest saved step {snapped}")
    return snapped, note


def step_selector(steps: list[int]) -> int:
    """The shared select-slider over the saved steps, kept in ``st.session_state["step"]`` and the URL."""
    ss = st.session_state
    pending = ss.pop("_pending_step", None)
    if pending is not None:
        ss["step"] = pending
    note = None
    if "step" not in ss:
        ss["step"], note = _initial_step(steps)
    elif ss["step"] not in steps:
        ss["step"] = nearest(steps, int(ss["step"]))
    st.sidebar.select_slider("Step", options=steps, key="step", help="saved checkpoints only")
    if note:
        st.sidebar.info(note)
    st.query_params["step"] = str(ss["step"])
    return int(ss["step"])


def _shift(steps: list[int], delta: int) -> None:
    ss = st.session_state
    i = steps.index(ss["step"]) if ss.get("step") in steps else len(steps) - 1
    ss["step"] = steps[min(max(i + delta, 0), len(steps) - 1)]


def play_controls(steps: list[int]) -> None:
    """◀ / ▶ buttons and a Play toggle that steps through the checkpoints (see :func:`advance`)."""
    ss = st.session_state
    if ss.pop("_stop_play", False):
        ss["playing"] = False
    c1, c2, c3 = st.sidebar.columns([1, 2, 1])
    c1.button("◀", key="prev_step", on_click=_shift, args=(steps, -1), help="previous checkpoint")
    c2.toggle("Play", key="playing", help="step through the checkpoints")
    c3.button("▶", key="next_step", on_click=_shift, args=(steps, 1), help="next checkpoint")
    st.sidebar.select_slider("Seconds per frame", options=PLAY_DELAYS, value=0.5, key="play_delay")


def advance(steps: list[int]) -> None:
    """While playing: wait, move to the next saved step and rerun; stop at the last one.
    Called by the entrypoint after the page has been drawn."""
    ss = st.session_state
    if not ss.get("playing") or not steps:
        return
    i = steps.index(ss["step"]) if ss.get("step") in steps else len(steps) - 1
    if i + 1 >= len(steps):
        ss["_stop_play"] = True
    else:
        time.sleep(float(ss.get("play_delay", 0.5)))
        ss["_pending_step"] = steps[i + 1]
    st.rerun()


# ------------------------------------------------------------------ the whole sidebar
def sidebar() -> Ctx | None:
    """Draw the sidebar and store the page context; None (after a message) when there is
    nothing to show."""
    runs_arg, root = parse_args()
    paths, errors = data.discover(root, runs_arg)
    for msg in errors:
        st.sidebar.warning(msg)
    ctx = Ctx(root=root, runs=paths)
    st.session_state[CTX_KEY] = ctx
    if not paths:
        where = ", ".join(runs_arg) if runs_arg else f"{root}/"
        st.error(f"No runs to show in {where}. Create one with `{data.CREATE_HINT}`, "
                 f"then start the dashboard with `grokscope app`.")
        return None
    path = pick_run(ctx)
    if path is None:
        st.error(f"No run named {st.query_params.get('run')!r} here (the link's `?run=`); choose a run in the sidebar.")
        return None
    ctx.key = data.RunKey.of(path)
    bad = bad_steps(path)
    ctx.steps = [s for s in data.steps(path, ctx.key.manifest) if s not in bad]
    for msg in bad.values():
        st.sidebar.warning(msg)
    if st.sidebar.button("↻ Refresh", help="re-read the run (new checkpoints, metrics and probe results)"):
        data.discover.clear()
    if not ctx.steps:
        st.warning(f"{path} has no readable checkpoints yet. If it is still training, refresh in a moment.")
        return ctx
    ctx.step = step_selector(ctx.steps)
    play_controls(ctx.steps)
    phase_buttons(ctx)
    return ctx


def _go_to(steps: list[int], step: int) -> None:
    st.session_state["step"] = nearest(steps, int(step))


def phase_buttons(ctx: Ctx) -> None:
    """One button per known phase boundary and the grokking step: jump to the nearest saved checkpoint."""
    ph = data.phases(ctx.path, ctx.key.metrics, ctx.key.probes)
    marks = [("memorised", ph.memorization_end), ("circuit starts", ph.circuit_start),
             ("circuit done", ph.circuit_end), ("grokked", ph.grok_step), ("clean-up done", ph.cleanup_end)]
    marks = [(label, s) for label, s in marks if s is not None]
    if not marks:
        return
    st.sidebar.markdown("Go to")
    for label, s in marks:  # one a row: two a row cut the labels short
        st.sidebar.button(f"{label} · {s}", key=f"goto_{label}", on_click=_go_to, args=(ctx.steps, s),
                          help=f"jump to the saved checkpoint nearest step {s}", width="stretch")


def mark_corrupt(path: str, step: int, err: Exception) -> None:
    """Record a corrupt checkpoint: it leaves the step selector, and the app reruns on a good step."""
    bad_steps(path)[step] = f"skipped {err}"
    st.rerun()
