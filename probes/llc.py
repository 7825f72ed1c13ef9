"""Local learning coefficient (LLC) of a checkpoint by SGLD, through ``devinterp`` (optional extra
``grokscope[llc]``; Lau et al. 2023, "The Local Learning Coefficient", arXiv:2308.12108; issue 15).

λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*)), the expectation over SGLD draws from the tempered
posterior localised at the checkpoint's weights w* (``devinterp.slt.sampler
.estimate_learning_coeff_with_summary``), L_n the mean cross-entropy of the last-position logits
on the training split, nβ the inverse temperature (devinterp's default: batch / log batch).

The sampler settings are probe parameters (``ctx.params``, defaults in :data:`LLC_DEFAULTS`) and
are stored with every result (scalars ``setting.*``), so a cached LLC says how it was measured.
Calibration (devinterp's guidance): the per-draw loss trace must rise from L_n(w*) and flatten
within the draws; a negative λ̂ or a trace that keeps climbing means the step size ``llc_lr`` is
too large or the localisation ``llc_localization`` too weak. Not a default probe (its cost is
many forward/backward passes per checkpoint); run it by name: ``grokscope probe RUN llc``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from probes.registry import ProbeContext, probe

LLC_DEFAULTS = {"llc_lr": 1e-4, "llc_localization": 100.0, "llc_chains": 2, "llc_draws": 50, "llc_batch": 256,
                "llc_seed": 0}


def available() -> bool:
    """True when devinterp (with the estimator this probe uses) can be imported."""
    try:
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary  # noqa: F401
    except ImportError:
        return False
    return True


@probe("llc", version=1, default=False, tasks=("grid",))
def llc_probe(ctx: ProbeContext) -> dict:
    """Local learning coefficient by SGLD (devinterp; Lau et al. 2023), with its sampler settings."""
    try:
        from devinterp.optim.sgld import SGLD
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    except ImportError as e:
        raise ImportError(f"the llc probe needs devinterp (pip install 'grokscope[llc]'): {e}") from None
    s = {k: ctx.params.get(k, v) for k, v in LLC_DEFAULTS.items()}
    idx = ctx.task.train_idx
    data = torch.utils.data.TensorDataset(ctx.inputs[idx], ctx.labels[idx])
    gen = torch.Generator().manual_seed(int(s["llc_seed"]))
    loader = torch.utils.data.DataLoader(data, batch_size=int(s["llc_batch"]), shuffle=True, generator=gen)

    def evaluate(model, batch):
        x, y = batch
        return F.cross_entropy(model(x)[:, -1].double(), y)

    with torch.enable_grad():
        out = estimate_learning_coeff_with_summary(
            ctx.model, loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs={"lr": float(s["llc_lr"]), "localization": float(s["llc_localization"])},
            num_chains=int(s["llc_chains"]), num_draws=int(s["llc_draws"]), seed=int(s["llc_seed"]),
            device="cpu", verbose=False)
    return {"llc_mean": float(out["llc/mean"]), "llc_std": float(out["llc/std"]),
            **{f"setting.{k}": float(v) for k, v in s.items()}}
