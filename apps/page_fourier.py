"""Fourier: how the run's weights and neurons move into a few key frequencies of Z_p.

Reads the ``fourier.*`` probes (docs/probes.md); the 2D spectrum of one neuron is computed on
demand from the checkpoint (``probes.fourier.neuron_spectrum``)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from apps import data, figures, plots, ui
from apps.state import Ctx, context
from interp.errors import StoreError
from probes.phases import Phases
from probes.registry import DEFAULT_PARAMS

FREQ_AXIS = "frequency k (w_k = 2πk/p)"


def _row(ctx: Ctx, steps_arr: np.ndarray) -> int:
    """Row of the probe arrays for the selected step (the nearest measured one)."""
    i = data.at_step(steps_arr, ctx.step)
    if int(steps_arr[i]) != ctx.step:
        st.caption(f"No probe results at step {ctx.step}; showing the nearest measured step {int(steps_arr[i])}.")
    return i


def embed_heatmap(ctx: Ctx) -> go.Figure | None:
    got = ui.arrays(ctx, "fourier.embed")
    if got is None:
        return None
    steps_arr, arr = got
    norms = arr["norms"][:, 1:]  # [n_steps, K]
    fig = plots.heatmap(norms.T, steps_arr.tolist(), list(range(1, norms.shape[1] + 1)),
                        title="W_E norm per frequency", x_title="training step", y_title=FREQ_AXIS,
                        colorbar="‖W_E proj‖", log_color=plots.spans_decades(norms, 1.5), height=420)
    return plots.decorate(fig, ui.phases(ctx), None, annotate=False, layer="above")


def gini_plot(ctx: Ctx, phases: Phases) -> go.Figure | None:
    series = ui.scalars(ctx, [("W_E", "fourier.embed/gini"), ("W_L = W_out·W_U", "fourier.logit_map/gini"),
                                  ("W_U", "fourier.unembed/gini")])
    if not series:
        return None
    fig = ui.time_plot(ctx, "Sparsity in the Fourier basis", "Gini coefficient (0..1)",
                       series, log_y=False, phases=phases, mark=False)
    return fig.update_yaxes(range=[0, 1])


def clusters(ctx: Ctx) -> tuple[go.Figure, go.Figure] | None:
    got = ui.arrays(ctx, "fourier.neurons")
    if got is None:
        return None
    steps_arr, arr = got
    i = _row(ctx, steps_arr)
    sizes = arr["cluster_sizes"][i, 1:]
    key = _key_mask(ctx, steps_arr[i], len(sizes))
    fig = plots.bar(list(range(1, len(sizes) + 1)), sizes, title=f"Neurons per frequency cluster (step {ctx.step})",
                    x_title=FREQ_AXIS, y_title="neurons (FVE ≥ threshold)")
    if not np.nansum(sizes):
        fig.update_yaxes(range=[0, 1])
        fig.add_annotation(text=f"no neuron in a cluster at this step (FVE ≥ {DEFAULT_PARAMS['fve_threshold']})",
                           xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False)
    fig.update_traces(marker_color=np.where(key, "#1f4e9c", "#9aa5b1").tolist())
    fve = arr["dominant_fve"][i]
    hist = go.Figure(go.Histogram(x=fve.astype(np.float64), xbins={"start": 0, "end": 1.0001, "size": 0.05}))
    thr = DEFAULT_PARAMS["fve_threshold"]
    hist.add_vline(x=thr, line={"dash": "dash", "color": "red"}, annotation_text=f"threshold {thr}")
    hist.update_layout(title="Fraction of variance explained by each neuron's top frequency", height=plots.HEIGHT,
                       margin={"l": 60, "r": 20, "t": 50, "b": 50}, bargap=0.05)
    hist.update_xaxes(title_text="FVE of the dominant frequency", range=[0, 1])
    hist.update_yaxes(title_text="neurons")
    return fig, hist


def neuron_stats(ctx: Ctx) -> dict | None:
    """Each neuron's dominant frequency and its FVE at the step (``fourier.neurons``), or None."""
    got = ui.arrays(ctx, "fourier.neurons")
    if got is None:
        return None
    steps_arr, arr = got
    i = data.at_step(steps_arr, ctx.step)
    return {"dominant_fve": arr["dominant_fve"][i], "dominant_freq": arr["dominant_freq"][i]}


def _key_mask(ctx: Ctx, step: int, n: int) -> np.ndarray:
    got = ui.arrays(ctx, "fourier.key_freqs")
    if got is None:
        return np.zeros(n, dtype=bool)
    s, arr = got
    return arr["is_key"][data.at_step(s, int(step)), 1:] > 0.5


def neuron_section(ctx: Ctx, stats: dict | None) -> None:
    """One MLP neuron at the step, any of them (default: the one its dominant frequency explains best): its
    activation over (a, b) and the 2D Fourier spectrum of it, from the checkpoint."""
    st.subheader(f"One neuron at step {ctx.step}")
    post = ui.mlp_acts(ctx, ctx.step)  # [p, p, d_mlp]
    if post is None:
        if ctx.run.train_config.attn_only:
            st.info("This model has no MLP (attention-only), so there are no neurons to show.")
        return
    d_mlp, p = post.shape[-1], post.shape[0]
    default = int(np.nanargmax(stats["dominant_fve"])) if stats is not None else 0
    c1, c2 = st.columns([1, 3])
    n = int(c1.number_input("neuron", min_value=0, max_value=d_mlp - 1, value=default, step=1, key="fourier_neuron",
                            help=f"0..{d_mlp - 1}; defaults to the neuron best explained by one frequency"))
    if stats is not None:
        c2.caption(f"dominant frequency {int(stats['dominant_freq'][n])}, "
                   f"FVE {float(stats['dominant_fve'][n]):.3f} (from the fourier.neurons probe)")
    acts_fig, spec_fig = neuron_figures(post[:, :, n], p, n, ctx.step)
    c3, c4 = st.columns(2)
    with c3:
        ui.chart(acts_fig, "fourier_neuron_acts")
    with c4:
        ui.chart(spec_fig, "fourier_neuron_spectrum")


def neuron_figures(acts: np.ndarray, p: int, n: int, step: int) -> tuple[go.Figure, go.Figure]:
    """The neuron's activation over (a, b) and the 2D Fourier spectrum of its centred activation
    (``probes.fourier.neuron_spectrum``: squared coefficients on basis(a) ⊗ basis(b))."""
    import torch

    from probes.fourier import basis_labels, neuron_spectrum

    centred = np.asarray(acts, dtype=np.float64) - float(np.mean(acts))
    spec = neuron_spectrum(torch.from_numpy(centred)).numpy()
    acts_fig = plots.heatmap(acts, list(range(p)), list(range(p)), title=f"Neuron {n} activation (step {step})",
                             x_title="b (second operand)", y_title="a (first operand)", colorbar="activation",
                             height=460)
    acts_fig.update_yaxes(autorange="reversed")  # a = 0 at the top, as on every (a, b) heatmap
    labels = basis_labels(p)
    spec_fig = plots.heatmap(spec, labels, labels, title=f"Neuron {n}: 2D Fourier spectrum of the centred activation",
                             x_title="basis function of b", y_title="basis function of a", colorbar="coef²",
                             colorscale="Blues", height=460, log_color=True)
    top = float(np.log10(max(float(spec.max()), 1e-12)))  # log colour over the top four decades, so that
    spec_fig.update_traces(zmin=top - 4, zmax=top)          # one large term no longer hides the rest
    return acts_fig, spec_fig


def logits_section(ctx: Ctx, phases: Phases) -> None:
    got = ui.arrays(ctx, "fourier.logits")
    c1, c2 = st.columns(2)
    if got is None:
        c1.info("No `fourier.logits` results: compute the probes to see the logit coefficients.")
    else:
        steps_arr, arr = got
        i = _row(ctx, steps_arr)
        coef = arr["coef"][i, 1:]
        fig = plots.bar(list(range(1, len(coef) + 1)), coef, title=f"Logits ≈ Σ α_k cos(w_k(a+b−c)) (step {ctx.step})",
                        x_title=FREQ_AXIS, y_title="coefficient α_k (logit units)")
        with c1:
            ui.chart(fig, "fourier_logit_coef")
    series = ui.scalars(ctx, [("key frequencies", "fourier.logits/fve_key"),
                                  ("all frequencies", "fourier.logits/fve_all")])
    if series:
        fig = ui.time_plot(ctx, "Logit variance explained by cos(w_k(a+b−c))", "fraction of variance", series,
                           log_y=False, phases=phases, mark=False)
        with c2:
            ui.chart(fig.update_yaxes(range=[0, 1.02]), "fourier_logit_fve")


def clock_pizza(ctx: Ctx, phases: Phases) -> go.Figure | None:
    series = ui.scalars(ctx, [("gradient symmetricity", "fourier.clock_pizza/gradient_symmetricity"),
                                  ("distance irrelevance", "fourier.clock_pizza/distance_irrelevance")])
    if not series:
        return None
    fig = ui.time_plot(ctx, "Clock vs Pizza (Zhong et al. 2023)", "measure (nominally 0..1)", series, log_y=False,
                       phases=phases, mark=False)
    lo = min(0.0, *(float(s.min()) for s in series.values()))  # gradient symmetricity can go negative
    hi = max(1.0, *(float(s.max()) for s in series.values()))
    return fig.update_yaxes(range=[lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)])


def _figure(ctx: Ctx, name: str, key: str, **options) -> None:
    """One view of the figure library (apps.figures) at the selected step (cached), or why it is missing."""
    try:
        fig = ui.view(ctx, name, **options)
    except (LookupError, StoreError, ValueError) as e:
        st.info(f"{figures.VIEWS[name].title}: {e}")
        return
    ui.chart(fig, key)


ANIMATIONS = {"W_E norms": "animate_embed_norms", "W_L norms": "animate_logit_map_norms",
              "cluster sizes": "animate_clusters", "logit coefficients": "animate_logit_coef",
              "one neuron": "animate_neuron"}


def animations(ctx: Ctx) -> None:
    """"Watch it form": one client-side animation at a time, chosen by the reader (none until chosen: each
    carries every probed step, so none travels to the browser on a rerun unless it is shown)."""
    st.markdown("**Watch it form**: animations over every probed step, played in the browser")
    choice = st.segmented_control("animation", list(ANIMATIONS), key="fourier_animation",
                                  label_visibility="collapsed")
    if choice == "one neuron":
        neuron_animation(ctx)
    elif choice is not None:
        _figure(ctx, ANIMATIONS[choice], f"fourier_{ANIMATIONS[choice]}")


def neuron_animation(ctx: Ctx) -> None:
    """One watched neuron's activation over (a, b) at every probed step (``fourier.neuron_acts``), one neuron at a
    time: each is p²·(steps) bytes on the wire (p = 113, 300 steps: ~5 MB), so the page sends only the chosen one."""
    got = ui.arrays(ctx, "fourier.neuron_acts")
    if got is None:
        st.info("No `fourier.neuron_acts` results: compute the probes to watch a neuron form.")
        return
    neurons, freqs = got[1]["neurons"][-1].tolist(), got[1]["freqs"][-1].tolist()
    if not neurons:
        st.info("`fourier.neuron_acts` watched no neuron in this run.")
        return
    n = st.selectbox("neuron", neurons, key="fourier_watch_neuron",
                     format_func=lambda j: f"neuron {j} (frequency k = {freqs[neurons.index(j)]})",
                     help="the neurons the probe watches: per final key frequency, the one it explains best")
    _figure(ctx, "animate_neuron", "fourier_animate_neuron", neuron=int(n))


def frequencies(ctx: Ctx, phases: Phases) -> None:
    """Weights in the Fourier basis: norms per frequency at the step (Fig. 3), over training, sparsity,
    Clock vs Pizza and the embedding circles."""
    _figure(ctx, "fourier_norms", "fourier_norms")
    c1, c2 = st.columns(2)
    with c1:
        ui.chart(embed_heatmap(ctx), "fourier_embed_heatmap")
    with c2:
        _figure(ctx, "key_freq_strength", "fourier_key_freqs")
    c3, c4 = st.columns(2)
    with c3:
        ui.chart(gini_plot(ctx, phases), "fourier_gini", "No Gini results yet.")
    with c4:
        ui.chart(clock_pizza(ctx, phases), "fourier_clock_pizza",
                 "No `fourier.clock_pizza` results: compute the probes to see Clock vs Pizza.")
    st.subheader("Embedding")
    _figure(ctx, "embedding_circle", "fourier_embedding_circle")


def neurons(ctx: Ctx) -> None:
    """MLP neurons: frequency clusters, FVE per neuron and frequency, the top neurons of each key frequency."""
    st.subheader(f"Neuron clusters at step {ctx.step}")
    got = clusters(ctx)
    if got is not None:
        c5, c6 = st.columns(2)
        with c5:
            ui.chart(got[0], "fourier_clusters")
        with c6:
            ui.chart(got[1], "fourier_fve_hist")
    _figure(ctx, "fve_heatmap", "fourier_fve_heatmap")
    if st.toggle("Top neurons of each key frequency over (a, b)", key="fourier_show_top_neurons",
                 help="a grid of heatmaps over (a, b) at the selected step (drawn only while this is on)"):
        _figure(ctx, "top_neurons", "fourier_top_neurons")


def logits(ctx: Ctx, phases: Phases) -> None:
    """The logits in the Fourier basis: coefficients at the step and over training (Fig. 14), variance
    explained, and the 2D Fourier norms (Fig. 4)."""
    logits_section(ctx, phases)
    c7, c8 = st.columns(2)
    with c7:
        _figure(ctx, "logit_coefficients", "fourier_logit_coef_time")
    with c8:
        _figure(ctx, "logit_fourier_2d", "fourier_logit_2d")


def render() -> None:
    ctx = context()
    ui.header("Fourier", ctx, "frequencies of Z_p in weights, neurons and logits")
    if not ui.grid_only(ctx, "The Fourier page"):
        return
    if not ui.need_probes(ctx, ["fourier.embed", "fourier.neurons"], "The Fourier page"):
        return
    phases = ui.phases(ctx)
    ui.position(ctx, phases, "fourier_position")
    ui.lazy_tabs("fourier_tab", {"Frequencies": lambda: frequencies(ctx, phases), "Neurons": lambda: neurons(ctx),
                                 "One neuron": lambda: neuron_section(ctx, neuron_stats(ctx)),
                                 "Logits": lambda: logits(ctx, phases), "Watch it form": lambda: animations(ctx)})


if __name__ == "__main__":
    render()
