"""Local learning coefficient (LLC) of a checkpoint by SGLD, through ``devinterp`` (optional extra
``grokscope[llc]``; Lau et al. 2023, "The Local Learning Coefficient", arXiv:2308.12108; issue 15).

λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*)), the expectation over SGLD draws from the tempered
posterior localised at the checkpoint's weights w* (``devinterp.slt.sampler
.estimate_learning_coeff_with_summary``), L_n the mean cross-entropy of the last-position logits
on the training split, nβ the inverse temperature (``llc_nbeta``; 0 means devinterp's default
batch / log batch).

The sampler settings are probe parameters (``ctx.params``, defaults in :data:`LLC_DEFAULTS`) and
are stored with every result (scalars ``setting.*``), so a cached LLC says how it was measured.
Each result also says whether its chains' loss trace settled (:func:`trace_check`: ``llc_drift``,
``llc_converged``). The defaults come from the calibration in docs/llc.md
(:mod:`probes.llc_calibration`): step size ε = ``llc_lr``, localisation γ = ``llc_localization``.
Not a default probe (its cost is many forward/backward passes per checkpoint); run it by name:
``grokscope probe RUN llc``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from probes.registry import ProbeContext, probe

#: chosen by the calibration in docs/llc.md
LLC_DEFAULTS = {"llc_lr": 3e-4, "llc_localization": 1000.0, "llc_nbeta": 0.0, "llc_chains": 4, "llc_draws": 200,
                "llc_batch": 256, "llc_seed": 0}
#: a trace has settled when its second half drifts by less than this share of its rise
DRIFT_TOLERANCE = 0.1
#: chains stay local when their loss rises by less than this share of the uniform-guess loss
LOCAL_RISE = 0.25


def available() -> bool:
    """True when devinterp (with the estimator this probe uses) can be imported."""
    try:
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary  # noqa: F401
    except ImportError:
        return False
    return True


def trace_check(trace: np.ndarray, init_loss: float, uniform_loss: float = math.inf) -> dict[str, float | bool]:
    """Did the chains settle? ``trace`` [chains, draws] is the per-draw loss, ``init_loss`` L_n(w*),
    ``uniform_loss`` the loss of a uniform guess, ln(number of classes).

    With the chain-mean trace ℓ_t and its second half H (t ≥ draws/2): ``rise`` = mean(ℓ_H) −
    L_n(w*); ``drift`` = the least-squares slope of ℓ over H times |H|, divided by max(|rise|,
    1e-3·L_n(w*), 1e-12) — how much the trace still moves over its second half, as a share of how
    far it rose. ``converged``: every draw finite and |drift| < :data:`DRIFT_TOLERANCE`
    (devinterp's guidance: the trace rises from L_n(w*) and flattens, no divergence, no drift).
    ``local``: converged and 0 < rise < :data:`LOCAL_RISE` · ``uniform_loss`` — the chains did
    not wander off to losses near a uniform guess, where λ̂ measures the temperature nβ rather
    than the checkpoint (a negative rise: the checkpoint is not a local minimum)."""
    trace = np.asarray(trace, dtype=np.float64).reshape(-1, np.shape(trace)[-1])
    finite = bool(np.isfinite(trace).all())
    if not finite:
        return {"finite": False, "rise": math.nan, "drift": math.nan, "converged": False, "local": False}
    mean = trace.mean(0)
    half = mean[len(mean) // 2:]
    rise = float(half.mean() - init_loss)
    slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) > 1 else 0.0
    drift = slope * len(half) / max(abs(rise), 1e-3 * abs(init_loss), 1e-12)
    converged = abs(drift) < DRIFT_TOLERANCE
    return {"finite": True, "rise": rise, "drift": drift, "converged": converged,
            "local": converged and 0 < rise < LOCAL_RISE * uniform_loss}


def estimate(model: torch.nn.Module, inputs: Tensor, labels: Tensor, settings: dict) -> dict:
    """SGLD estimate of the LLC of ``model`` on (inputs, labels) with ``settings`` (keys of
    :data:`LLC_DEFAULTS`): llc_mean, llc_std, the loss trace [chains, draws], init_loss (L_n(w*)
    on all of ``inputs``), the trace check (:func:`trace_check`) and seconds taken."""
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from devinterp.utils import default_nbeta

    s = {**LLC_DEFAULTS, **settings}
    data = torch.utils.data.TensorDataset(inputs, labels)
    gen = torch.Generator().manual_seed(int(s["llc_seed"]))
    loader = torch.utils.data.DataLoader(data, batch_size=int(s["llc_batch"]), shuffle=True, generator=gen)
    nbeta = float(s["llc_nbeta"]) or float(default_nbeta(loader))

    def evaluate(model, batch):
        x, y = batch
        return F.cross_entropy(model(x)[:, -1].double(), y)

    t0 = time.perf_counter()
    with torch.no_grad():
        logits = model(inputs)[:, -1].double()
    init_loss, uniform_loss = float(F.cross_entropy(logits, labels)), math.log(logits.shape[-1])
    try:
        with torch.enable_grad():
            out = estimate_learning_coeff_with_summary(
                model, loader, evaluate=evaluate, sampling_method=SGLD,
                optimizer_kwargs={"lr": float(s["llc_lr"]), "localization": float(s["llc_localization"]),
                                  "nbeta": nbeta},
                num_chains=int(s["llc_chains"]), num_draws=int(s["llc_draws"]), seed=int(s["llc_seed"]),
                device="cpu", verbose=False)
    except RuntimeError as e:  # devinterp stops a chain whose loss became NaN: the sampler diverged
        if "NaN" not in str(e):
            raise
        return {"llc_mean": math.nan, "llc_std": math.nan, "nbeta": nbeta, "init_loss": init_loss,
                "trace": np.full((1, 1), math.nan), **trace_check(np.full((1, 1), math.nan), init_loss),
                "seconds": time.perf_counter() - t0}
    trace = np.asarray(out["loss/trace"], dtype=np.float64)
    return {"llc_mean": float(out["llc/mean"]), "llc_std": float(out["llc/std"]), "nbeta": nbeta,
            "init_loss": init_loss, "trace": trace, **trace_check(trace, init_loss, uniform_loss),
            "seconds": time.perf_counter() - t0}


@probe("llc", version=2, default=False, tasks=("grid",))
def llc_probe(ctx: ProbeContext) -> dict:
    """Local learning coefficient by SGLD (devinterp; Lau et al. 2023), with its sampler settings
    and whether its loss trace settled."""
    if not available():
        raise ImportError("the llc probe needs devinterp (pip install 'grokscope[llc]')")
    s = {k: ctx.params.get(k, v) for k, v in LLC_DEFAULTS.items()}
    idx = ctx.task.train_idx
    model = ctx.model
    out = estimate(model, ctx.inputs[idx], ctx.labels[idx], s)
    return {"llc_mean": out["llc_mean"], "llc_std": out["llc_std"], "llc_drift": float(out["drift"]),
            "llc_converged": float(out["converged"]), "llc_local": float(out["local"]),
            "setting.llc_nbeta_used": out["nbeta"],
            **{f"setting.{k}": float(v) for k, v in s.items()}}
