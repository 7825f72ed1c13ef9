"""Progress measures (Nanda et al. 2023) and Li2 signals (Tian 2025).

Probes: ``progress.loss``, ``progress.weights``, ``progress.restricted`` and ``li2`` (output
names in docs/probes.md). The math is in pure functions taking the key frequencies
explicitly; the probes feed them :func:`progress_frequencies` (by default the final
checkpoint's key frequencies, set by ``probes.run``).

Grid conventions: row index ``a·p + b`` of the p×p grid; logits [p², p] at the ``=`` position;
Fourier basis rows (``probes.fourier.fourier_basis``): const, cos 1, sin 1, cos 2, ...;
w_k = 2πk/p.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from probes.fourier import fourier_basis, key_frequencies, logit_map, neurons_probe
from probes.registry import ProbeContext, probe


# ====================================================================== losses
def cross_entropy(logits: Tensor, labels: Tensor) -> float:
    """Mean cross-entropy in float64 over the rows of ``logits`` [n, c] (NaN if n = 0)."""
    if len(labels) == 0:
        return math.nan
    return F.cross_entropy(logits.double(), labels).item()


def row_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-row cross-entropy logsumexp(logits_i) − logits_i[y_i] in float64: [n, c] -> [n]."""
    correct = logits.gather(1, labels[:, None]).squeeze(1)
    return torch.logsumexp(logits.double(), dim=-1) - correct.double()


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose largest logit is the label (NaN if there are no rows)."""
    if len(labels) == 0:
        return math.nan
    return (logits.argmax(-1) == labels).double().mean().item()


def _mean(x: Tensor, mask: Tensor) -> float:
    return x[mask].double().mean().item() if bool(mask.any()) else math.nan


@probe("progress.loss", version=1)
def loss_probe(ctx: ProbeContext) -> dict:
    """Train/test cross-entropy and accuracy at the checkpoint, on the full-grid forward.

    loss = mean_i [logsumexp_c logits_ic − logits_{i,y_i}] over the split (float64); the train and
    test curves of Power et al. 2022 (arXiv:2201.02177) and Nanda et al. 2023 (arXiv:2301.05217)."""
    losses = row_losses(ctx.logits, ctx.labels)
    correct = ctx.logits.argmax(-1) == ctx.labels
    tr, te = ctx.train_mask, ctx.test_mask
    return {"train_loss": _mean(losses, tr), "train_acc": _mean(correct, tr),
            "test_loss": _mean(losses, te), "test_acc": _mean(correct, te)}


@probe("progress.weights", version=1)
def weights_probe(ctx: ProbeContext) -> dict:
    """Sum of squared weights, total and per parameter: ssq = Σ_θ θ² (Nanda et al. 2023,
    arXiv:2301.05217, §5.1 "total sum of squared weights", the weight-decay cleanup signal)."""
    out = {f"ssq.{name}": param.detach().double().pow(2).sum().item() for name, param in ctx.model.named_parameters()}
    out["ssq_total"] = sum(out.values())
    return out


# ====================================================================== logit convention
def freq_rows(k: int, p: int) -> list[int]:
    """Basis rows of frequency k ≥ 1: [cos k, sin k] (only cos k for k = p/2 with p even)."""
    return [2 * k - 1, 2 * k] if 2 * k < p else [2 * k - 1]


def sum_directions(p: int, freqs: Tensor) -> Tensor:
    """Unit vectors cos(w_k(a+b)) and sin(w_k(a+b)) over the grid: [n_freqs, 2, p²] (float64).

    The sine of k = p/2 (even p) vanishes on the grid; its row is zero."""
    a = torch.arange(p, dtype=torch.float64)
    ab = (a[:, None] + a[None, :]).reshape(-1)  # [p²]
    phase = 2 * math.pi / p * freqs.double()[:, None] * ab[None]  # [f, p²]
    dirs = torch.stack([phase.cos(), phase.sin()], dim=1)  # [f, 2, p²]
    norm = dirs.norm(dim=-1, keepdim=True)
    return torch.where(norm > 1e-6, dirs / norm.clamp_min(1e-12), torch.zeros_like(dirs))


def logit_losses(logits: Tensor, labels: Tensor, train: Tensor, key_freqs: Tensor) -> dict:
    """Restricted and excluded loss, logit convention (Nanda et al. 2023, arXiv:2301.05217, §5.1),
    on the train split.

    With D the unit directions cos(w_k(a+b)), sin(w_k(a+b)) over the p² grid for the key
    frequencies and L the logits [p², p] (each output class c a vector over the grid):

        restricted: L_r = DᵀD L + mean_grid(L − DᵀD L)       (bias correction of the paper)
        excluded:   L_x = L − DᵀD L                         (all key frequencies removed)
        excluded_per_freq[k] = CE(L − D_kᵀD_k L)             (only frequency k removed)

    CE is the mean cross-entropy over the train split ``train`` (a [p²] bool mask or row indices).
    Returns ``restricted`` and ``excluded`` (floats), ``restricted_acc`` and ``excluded_acc`` (the accuracy of
    L_r and L_x on the same rows: the share whose largest logit is the answer) and ``excluded_per_freq``
    [K+1] (NaN where k is not key, and at index 0)."""
    p = math.isqrt(logits.shape[0])
    L = logits.double()  # [p², p]
    D = sum_directions(p, key_freqs)  # [f, 2, p²]
    coef = torch.einsum("fig,gc->fic", D, L)  # [f, 2, p]: coordinates of each class column on D
    L_tr, D_tr, y = L[train], D[..., train], labels[train]  # [n, p], [f, 2, n], [n]
    proj = torch.einsum("fin,fic->nc", D_tr, coef)  # [n, p]: DᵀD L on the train rows
    bias = L.mean(0) - torch.einsum("fi,fic->c", D.mean(-1), coef)  # mean_grid(L − DᵀD L), [p]
    per_freq = torch.full((p // 2 + 1,), math.nan, dtype=torch.float64)
    if len(key_freqs) and len(y):
        # one frequency removed at a time: [f, n, p]; float32 suffices for these large losses
        removed = L_tr.float()[None] - torch.einsum("fin,fic->fnc", D_tr.float(), coef.float())
        per_freq[key_freqs] = row_losses(removed.flatten(0, 1), y.repeat(len(key_freqs))).view(-1, len(y)).mean(1)
    return {"restricted": cross_entropy(proj + bias, y), "excluded": cross_entropy(L_tr - proj, y),
            "restricted_acc": accuracy(proj + bias, y), "excluded_acc": accuracy(L_tr - proj, y),
            "excluded_per_freq": per_freq}


# ====================================================================== activation convention
def key_block_mask(rows: Tensor, key_freqs: Tensor) -> Tensor:
    """[s, s] mask of 2D-Fourier terms (i, j) in the 3×3 block {const, cos k, sin k}² of a key
    frequency k, excluding the constant term (0, 0). ``rows`` [s] are basis row indices."""
    freq = (rows + 1) // 2  # basis row -> frequency (row 0 -> 0)
    same = (freq[:, None] == freq[None, :]) | (freq[:, None] == 0) | (freq[None, :] == 0)
    is_key = torch.isin(freq, key_freqs) | (freq == 0)
    mask = same & is_key[:, None] & is_key[None, :]
    mask[0, 0] = False
    return mask


def key_coefficients(acts: Tensor, basis: Tensor, key_freqs: Tensor) -> tuple[Tensor, Tensor]:
    """Key-frequency 2D Fourier coefficients of activations over the grid.

    acts [p², m]; basis [p, p]. With S = {const} ∪ {cos k, sin k : k key} and B_S [s, p] its rows,
    C = B_S A B_Sᵀ [s, s, m] (A the activations as [p, p, m]) masked to the union of the key 3×3
    blocks minus (0, 0) (:func:`key_block_mask`). Returns (C, B_S); the key part of the
    activations is A_key = B_Sᵀ C B_S (:func:`to_grid`)."""
    C, B, rows = _restricted_transform(acts, basis, key_freqs)
    return C * key_block_mask(rows, key_freqs)[..., None].to(C.dtype), B


def _restricted_transform(acts: Tensor, basis: Tensor, key_freqs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unmasked C = B_S A B_Sᵀ [s, s, m], B_S [s, p] and the row indices S [s] (row 0 is const)."""
    p = basis.shape[0]
    rows = torch.tensor([0] + [r for k in key_freqs.tolist() for r in freq_rows(k, p)], dtype=torch.long)
    B = basis[rows].to(acts.dtype)  # [s, p]
    half = (B @ acts.reshape(p, -1)).view(len(rows), p, -1)  # [s, p·m] -> [s, p, m]: Σ_a B_i(a) A[a, b]
    return torch.matmul(B, half), B, rows  # [s, s, m]: Σ_b B_j(b) half[i, b]


def to_grid(C: Tensor, B: Tensor) -> Tensor:
    """Inverse of the restricted 2D transform: C [s, s, x] -> Σ_ij C_ij B_i(a) B_j(b) as [p², x]."""
    s, p = B.shape
    half = torch.matmul(B.T, C)  # [s, p, x]: Σ_j C_ij B_j(b)
    return (B.T @ half.reshape(s, -1)).view(p * p, -1)  # [p, p·x] -> [p², x]: Σ_i B_i(a) half[i]


def activation_losses(model, cache, task, key_freqs: Tensor, basis: Tensor) -> dict:
    """Restricted and excluded loss, activation convention, on the train split.

    With A the last MLP layer's activations at ``=`` over the grid [p², m], A_key = B_Sᵀ C B_S its
    key-frequency part (:func:`key_coefficients`) and Ā its mean over the grid (the (0, 0) term):

        restricted: resid = resid_mid + b_out + (Ā + A_key) W_out     (keep only key components)
        excluded:   resid = resid_post − A_key W_out                 (remove them)
        logits = ln_final(resid) W_U + b_U;  loss = mean cross-entropy on the train split

    so the attention path and embeddings reach the logits unchanged (the paper's restricted/excluded
    loss, Nanda et al. 2023, arXiv:2301.05217, §5.1, taken on the neurons instead of the logits).
    A_key W_out = B_Sᵀ (C W_out) B_S is mapped to d_model before returning to the grid.
    ``restricted_acc`` / ``excluded_acc``: the accuracy of the same logits. NaN for attention-only models."""
    cfg = model.cfg
    if cfg.attn_only:
        return {"restricted": math.nan, "excluded": math.nan, "restricted_acc": math.nan, "excluded_acc": math.nan}
    layer, mlp = cfg.n_layers - 1, model.blocks[-1].mlp
    tr = task.train_idx
    y = task.labels[tr]
    C, B, rows = _restricted_transform(cache["post", layer][:, -1], basis, key_freqs)  # acts [p², m]
    mean = C[0, 0] / task.p  # grid mean of the activations: B_0 = 1/√p, so C_00 = Σ_ab A / p
    C = C * key_block_mask(rows, key_freqs)[..., None].to(C.dtype)
    key_out = to_grid(C @ mlp.W_out, B)[tr]  # [n, d]
    base = cache["resid_mid", layer][tr, -1] + (mlp.b_out if cfg.mlp_bias else 0)
    restricted = base + mean @ mlp.W_out + key_out
    excluded = cache["resid_post", layer][tr, -1] - key_out
    logits_r, logits_x = _unembed(model, restricted), _unembed(model, excluded)
    return {"restricted": cross_entropy(logits_r, y), "excluded": cross_entropy(logits_x, y),
            "restricted_acc": accuracy(logits_r, y), "excluded_acc": accuracy(logits_x, y)}


def _unembed(model, resid: Tensor) -> Tensor:  # [n, d] -> [n, p]: the answer classes (no '=' output)
    return model.unembed(model.ln_final(resid) if model.cfg.layernorm else resid)[..., : model.cfg.d_vocab - 1]


def progress_frequencies(ctx: ProbeContext) -> Tensor:
    """The frequencies the progress measures use: ``ctx.params["key_freqs"]`` when set (``probes.run``
    sets the final checkpoint's key frequencies, as Nanda et al. 2023 do), else this checkpoint's own
    (``probes.fourier.key_frequencies``)."""
    fixed = ctx.params.get("key_freqs")
    if fixed is None:
        return key_frequencies(ctx).long()
    return torch.tensor(sorted(int(k) for k in fixed), dtype=torch.long)


@probe("progress.restricted", version=3, uses=("key_freqs",))
def restricted_probe(ctx: ProbeContext) -> dict:
    """Restricted/excluded loss on the train split, logit and activation conventions
    (Nanda et al. 2023, arXiv:2301.05217, §5.1), and the accuracy of the same restricted / excluded logits
    (version 3); formulas in :func:`logit_losses` and :func:`activation_losses`; frequencies from
    :func:`progress_frequencies`."""
    keys = progress_frequencies(ctx)
    logit = logit_losses(ctx.logits, ctx.labels, ctx.task.train_idx, keys)
    with torch.no_grad():
        act = activation_losses(ctx.model, ctx.cache, ctx.task, keys, fourier_basis(ctx.p))
    return {"logit.restricted_loss": logit["restricted"], "logit.excluded_loss": logit["excluded"],
            "logit.excluded_loss_per_freq": logit["excluded_per_freq"],
            "act.restricted_loss": act["restricted"], "act.excluded_loss": act["excluded"],
            "logit.restricted_acc": logit["restricted_acc"], "logit.excluded_acc": logit["excluded_acc"],
            "act.restricted_acc": act["restricted_acc"], "act.excluded_acc": act["excluded_acc"]}


# ====================================================================== Li2
def hidden_gradient(model, tokens: Tensor, labels: Tensor) -> Tensor:
    """G_F = −∂L/∂F [n, d_mlp] by a full forward and backward pass of the hooked model: F the last
    MLP layer's activations at the last position (hook ``blocks.{L-1}.mlp.hook_post``), L the mean
    cross-entropy (float64) of the last-position logits (Tian 2025, arXiv:2509.21519)."""
    name = f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"
    saved: list[Tensor] = []

    def keep(act: Tensor, hook) -> Tensor:
        saved.append(act)
        return act

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, keep)])[:, -1, : model.cfg.d_vocab - 1]
        (grad,) = torch.autograd.grad(F.cross_entropy(logits.double(), labels), saved[0])
    return -grad[:, -1]


def hidden_gradient_from_cache(model, post: Tensor, resid_mid: Tensor, labels: Tensor) -> Tensor:
    """G_F = −∂L/∂F [n, d_mlp] as :func:`hidden_gradient`, by a backward pass through the part of
    the forward downstream of F only: F [n, m] (cached ``hook_post`` at the last position, as a
    leaf) → mlp.hook_post → F W_out + b_out → + resid_mid [n, d] → ln_final → unembed → L.
    Equal to the full pass (the last position's F affects only the last position's logits) at
    a fraction of its cost."""
    mlp = model.blocks[-1].mlp
    with torch.enable_grad():
        leaf = post.detach().requires_grad_(True)
        out = mlp.hook_post(leaf) @ mlp.W_out + (mlp.b_out if model.cfg.mlp_bias else 0)
        logits = _unembed(model, resid_mid.detach() + out)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits.double(), labels), leaf)
    return -grad


def hidden_gradient_from_logits(model, logits: Tensor, labels: Tensor) -> Tensor:
    """G_F = −∂L/∂F [n, d_mlp] as :func:`hidden_gradient`, for models without LayerNorm, from the
    last-position logits [n, d_vocab_out]: the logits are F W_out W_U plus terms that do not depend
    on F, and ∂L/∂logits = (softmax(logits) − Y)/n for the mean float64 cross-entropy (Y one-hot),
    so G_F = −(softmax(logits) − Y) (W_out W_U)ᵀ / n: the same backward pass, written out (one
    [n, d_vocab_out] × [d_vocab_out, d_mlp] product instead of a forward and backward through
    W_out and W_U)."""
    if model.cfg.layernorm:
        raise ValueError("hidden_gradient_from_logits: the model has LayerNorm; use hidden_gradient_from_cache")
    residual = logits.double().softmax(-1)
    residual[torch.arange(len(labels)), labels] -= 1.0
    W_L = logit_map(model)  # [m, o]
    return (residual / -len(labels)).to(W_L.dtype) @ W_L.T


def neuron_energy(acts: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """E_j = ½‖Ỹᵀσ_j‖² per neuron [m] (Tian 2025, arXiv:2509.21519, the energy whose local maxima
    are the emerging features): σ_j [n] the neuron's activations over the samples, Ỹ = Y − 1ȳᵀ the
    one-hot labels [n, c] centred over the samples. Ỹᵀσ_j = S_cj − (n_c/n) Σ_c' S_c'j with S_cj the
    sum of σ_j over the samples of class c (a scatter-add in the activations' dtype, no [n, c]
    matrix; the centring and squares in float64)."""
    S = acts.new_zeros(n_classes, acts.shape[1]).index_add_(0, labels, acts).double()  # [c, m]
    share = torch.bincount(labels, minlength=n_classes).double() / len(labels)  # [c]
    return 0.5 * (S - share[:, None] * S.sum(0)).pow(2).sum(0)


def key_neurons(ctx: ProbeContext) -> Tensor:
    """[d_mlp] bool: neurons in the cluster of a key frequency, i.e. whose dominant frequency
    (``fourier.neurons``) is key and explains ≥ ``fve_threshold`` of their variance."""
    neurons = neurons_probe(ctx)
    clustered = neurons["dominant_fve"] >= ctx.params["fve_threshold"]
    return clustered & torch.isin(neurons["dominant_freq"].long(), progress_frequencies(ctx))


@probe("li2", version=3, uses=("key_freqs",))
def li2_probe(ctx: ProbeContext) -> dict:
    """Li2 signals on the train split (Tian 2025, arXiv:2509.21519): ‖G_F‖_F with G_F = −∂L/∂F, F the
    last MLP layer's activations at ``=`` and L the mean training cross-entropy
    (:func:`hidden_gradient_from_logits`, or :func:`hidden_gradient_from_cache` with LayerNorm); the
    neuron energies E_j = ½‖Ỹᵀσ_j‖² (:func:`neuron_energy`);
    and energy_key_share = Σ_{j key} E_j / Σ_j E_j over key-frequency neurons (:func:`key_neurons`).
    NaN (energy NaN-filled) for attention-only models."""
    cfg, tr = ctx.model.cfg, ctx.task.train_idx
    y = ctx.labels[tr]
    if cfg.attn_only:
        nan = math.nan
        return {"grad_norm_hidden": nan, "energy": torch.full((cfg.d_mlp,), nan), "energy_key_share": nan}
    layer = cfg.n_layers - 1
    post = ctx.cache["post", layer][tr, -1]  # [n, m]
    if cfg.layernorm:
        grad = hidden_gradient_from_cache(ctx.model, post, ctx.cache["resid_mid", layer][tr, -1], y)
    else:
        grad = hidden_gradient_from_logits(ctx.model, ctx.logits[tr], y)
    energy = neuron_energy(post, y, cfg.d_vocab_out)
    total = energy.sum()
    share = (energy[key_neurons(ctx)].sum() / total).item() if total > 0 else math.nan
    return {"grad_norm_hidden": grad.norm().item(), "energy": energy, "energy_key_share": share}
