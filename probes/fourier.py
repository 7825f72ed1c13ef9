"""Fourier probes: how much of a modular-arithmetic transformer lives in the Fourier basis of Z_p.

A grokked model of a + b mod p embeds tokens on a few key frequencies w_k = 2πk/p, its MLP
neurons compute products of cos/sin of those frequencies, and its logits are approximately
Σ_k α_k cos(w_k(a + b − c)) (Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability", arXiv:2301.05217, §4). The probes here measure that structure at one checkpoint:

    fourier.embed      per-frequency norms of W_E (token axis) and their Gini coefficient
    fourier.unembed    the same for W_U (output-class axis)
    fourier.logit_map  the same for W_L = W_out·W_U of the last layer (output-class axis)
    fourier.neurons    per-neuron fraction of variance explained by each frequency, clusters, dead neurons
    fourier.key_freqs  the key frequencies (rule in :func:`key_frequencies`)
    fourier.logits     coefficients of the logits on cos(w_k(a + b − c)) and the variance they explain
    fourier.clock_pizza  gradient symmetricity and distance irrelevance (Zhong et al. 2023, arXiv:2306.17844)

Conventions (docs/probes.md): basis rows are const, cos 1, sin 1, cos 2, …, each unit-norm; for even p
the last frequency K = p/2 has only its cosine. Frequency-indexed arrays have length K+1 (index 0: constant).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probes.clock_pizza import clock_pizza_probe, clock_pizza_triples, distance_irrelevance, gradient_symmetricity  # noqa: F401  (re-exported: the probe lives in its own module)
from probes.registry import ProbeContext, probe

# ============================================================================ basis
_BASIS: dict[tuple[int, torch.dtype, str], Tensor] = {}


def n_freqs(p: int) -> int:
    """K = ⌊p/2⌋, the highest frequency of Z_p."""
    return p // 2


def freq_index(p: int) -> Tensor:
    """[p] int64: the frequency k of each row of :func:`fourier_basis` (0, 1, 1, 2, 2, …, K[, K])."""
    return (torch.arange(p) + 1) // 2


def basis_labels(p: int) -> list[str]:
    """Names of the rows of :func:`fourier_basis`: ``["const", "cos 1", "sin 1", …]``."""
    return ["const"] + [f"{'sin' if i % 2 == 0 else 'cos'} {(i + 1) // 2}" for i in range(1, p)]


def fourier_basis(p: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """[p, p] orthonormal Fourier basis of Z_p, one basis vector per row, cached per (p, dtype, device).

    Row 0 is the constant 1/√p; row 2k−1 is cos(w_k x) and row 2k is sin(w_k x) (x = 0..p−1,
    w_k = 2πk/p), each divided by its norm. For even p the last row is cos(w_{p/2} x) = (−1)^x / √p
    (sin(w_{p/2} x) vanishes on Z_p), so every frequency 1..⌊p/2⌋ is present. Treat the result as read-only.
    """
    if p < 2:
        raise ValueError(f"p: must be >= 2, got {p}")
    key = (p, dtype, str(torch.device(device or "cpu")))
    if key not in _BASIS:
        rows = torch.arange(p)
        phase = (2 * math.pi / p) * freq_index(p).double()[:, None] * torch.arange(p).double()[None, :]
        is_sin = (rows % 2 == 0) & (rows > 0)
        basis = torch.where(is_sin[:, None], phase.sin(), phase.cos())
        _BASIS[key] = (basis / basis.norm(dim=1, keepdim=True)).to(dtype=dtype, device=device)
    return _BASIS[key]


def per_freq(sq: Tensor, p: int, dim: int = -1) -> Tensor:
    """Sum squared basis coefficients over the rows of each frequency: length p -> K+1 along ``dim``."""
    dim = dim % sq.ndim
    out = sq.new_zeros(*sq.shape[:dim], n_freqs(p) + 1, *sq.shape[dim + 1:])
    return out.index_add_(dim, freq_index(p).to(sq.device), sq)


def gini(c: Tensor) -> Tensor:
    """Gini coefficient of a non-negative vector (Hurley & Rickard 2009, "Comparing measures of sparsity",
    IEEE Trans. Inf. Theory 55(10), the Gini index G):

        G = 1 − 2 Σ_{k=1..N} (c_(k) / ‖c‖₁) · (N − k + ½) / N,   c_(1) ≤ … ≤ c_(N) sorted ascending.

    0 for a flat vector, 1 − 1/N for a single non-zero entry; NaN if c is all zero.
    """
    c = torch.sort(c.abs().flatten().double()).values
    n = c.numel()
    total = c.sum()
    if n == 0 or total <= 0:
        return torch.tensor(float("nan"))
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return 1 - 2 * ((c / total) * (n - k + 0.5) / n).sum()


def fourier_norms(W: Tensor, p: int, axis: int) -> tuple[Tensor, Tensor]:
    """Project ``W`` on the Fourier basis along ``axis`` (length p) and take norms over the other axes.

    coef = W ×_axis basisᵀ (coef[…, i, …] = Σ_x W[…, x, …] · basis[i, x]);
    basis_norms[i] = ‖coef[…, i, …]‖₂ over the other axes, [p];
    norms[k] = √(Σ_{i: freq(i)=k} basis_norms[i]²) = ‖W projected on {cos k, sin k}‖_F, [K+1].
    """
    if W.shape[axis] != p:
        raise ValueError(f"axis {axis} of W has length {W.shape[axis]}, expected p = {p}")
    W = W.detach().movedim(axis, -1)
    coef = W @ fourier_basis(p, W.dtype, W.device).T  # [..., p]
    basis_sq = coef.pow(2).reshape(-1, p).sum(0)
    return per_freq(basis_sq, p).sqrt(), basis_sq.sqrt()


# ============================================================================ model access
def _last_mlp(model: Any) -> Any | None:
    """The last block's MLP, or None for an attention-only model."""
    return None if model.cfg.attn_only else model.blocks[-1].mlp


def _norm_outputs(W: Tensor | None, p: int, axis: int) -> dict[str, Any]:
    if W is None:
        nan = float("nan")
        return {"norms": torch.full((n_freqs(p) + 1,), nan), "basis_norms": torch.full((p,), nan), "gini": nan}
    norms, basis_norms = fourier_norms(W, p, axis)
    return {"norms": norms.float(), "basis_norms": basis_norms.float(), "gini": float(gini(norms[1:]))}


def logit_map(model: Any) -> Tensor | None:
    """W_L = W_out · W_U [d_mlp, p] of the last layer (None for attention-only models), over the p
    answer classes (an ``=`` output class is dropped: :func:`answer_unembed`). A final LayerNorm
    between them is ignored (Nanda et al. 2023 define W_L for a model without one)."""
    mlp = _last_mlp(model)
    return None if mlp is None else (mlp.W_out @ answer_unembed(model)).detach()


def answer_unembed(model: Any) -> Tensor:
    """W_U [d_model, p]: the unembedding's p answer columns (p = d_vocab − 1); a model trained with
    the ``=`` token as an output class (``output_eq``, d_vocab_out = p + 1) has that column dropped,
    as Nanda et al. 2023's analysis does (``logits[:, -1, :-1]``)."""
    return model.unembed.W_U[:, : model.cfg.d_vocab - 1]


@probe("fourier.embed", tasks=("grid", "modular"))  # weights only: any task with residue tokens 0..p−1
def embed_probe(ctx: ProbeContext) -> dict[str, Any]:
    """Per-frequency norms of the embedding W_E over the token axis, and their Gini coefficient.

    The token rows 0..p−1 of W_E [d_vocab, d_model] (the ``=`` row is excluded) are projected on the basis
    along the token axis: coef = basis · W_E[:p] [p, d_model]; basis_norms[i] = ‖coef[i]‖;
    norms[k] = ‖W_E projected on {cos k, sin k}‖_F; gini = G(norms[1:]) (see :func:`gini`).
    Nanda et al. 2023 (arXiv:2301.05217) §4 (embedding sparse in the Fourier basis).
    """
    return _norm_outputs(ctx.model.embed.W_E[: ctx.p], ctx.p, axis=0)


@probe("fourier.unembed", tasks=("grid", "modular"))  # weights only: any task with residue tokens 0..p−1
def unembed_probe(ctx: ProbeContext) -> dict[str, Any]:
    """Per-frequency norms of the unembedding W_U [d_model, p] over the output-class axis, and their Gini.

    coef = W_U · basisᵀ [d_model, p]; basis_norms[i] = ‖coef[:, i]‖; norms[k] over the rows of frequency k;
    gini = G(norms[1:]). Nanda et al. 2023 (arXiv:2301.05217) §4.
    """
    return _norm_outputs(answer_unembed(ctx.model), ctx.p, axis=1)


def _logit_map_outputs(ctx: ProbeContext) -> dict[str, Any]:
    return ctx.memo("fourier.logit_map", lambda: _norm_outputs(logit_map(ctx.model), ctx.p, axis=1))


@probe("fourier.logit_map", tasks=("grid", "modular"))  # weights only: any task with residue tokens 0..p−1
def logit_map_probe(ctx: ProbeContext) -> dict[str, Any]:
    """Per-frequency norms of the neuron-logit map W_L = W_out·W_U [d_mlp, p] (last layer) over the
    output-class axis, and their Gini.

    coef = W_L · basisᵀ [d_mlp, p]; basis_norms[i] = ‖coef[:, i]‖; norms[k] over the rows of frequency k;
    gini = G(norms[1:]). NaN-filled for attention-only models. Nanda et al. 2023 (arXiv:2301.05217) §4
    (W_L is well approximated by a few key frequencies).
    """
    return _logit_map_outputs(ctx)


# ============================================================================ neurons
def neuron_spectrum(acts: Tensor) -> Tensor:
    """[p, p] squared coefficients of one neuron's activations on the 2D Fourier basis (for plots).

    acts[a, b] is the activation on input (a, b); the result is (basis · acts · basisᵀ)², entry [i, j] the
    energy on basis row i along a times basis row j along b. Not centred: [0, 0] holds p²·mean².
    """
    if acts.ndim != 2 or acts.shape[0] != acts.shape[1]:
        raise ValueError(f"acts: expected a [p, p] grid, got shape {tuple(acts.shape)}")
    basis = fourier_basis(acts.shape[0], acts.dtype, acts.device)
    return torch.einsum("ia,ab,jb->ij", basis, acts, basis).pow(2)


_SUM_DIFF: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}


def _sum_diff_index(p: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """[p²] int64 (a + b) mod p and (a − b) mod p over the row-major grid; cached per p."""
    key = (p, str(device))
    if key not in _SUM_DIFF:
        x = torch.arange(p, device=device)
        _SUM_DIFF[key] = ((x[:, None] + x[None, :]) % p).reshape(-1), ((x[:, None] - x[None, :]) % p).reshape(-1)
    return _SUM_DIFF[key]


def neuron_fve(acts: Tensor, p: int) -> Tensor:
    """[d_mlp, K+1] fraction of each neuron's centred activation variance explained by each frequency.

    acts: [p*p, d_mlp] (or [p, p, d_mlp]) activations on the row-major grid (a, b). With f = acts − its mean over
    the grid (per neuron) and C = basis · f · basisᵀ its 2D Fourier coefficients (rows along a, columns along b),

        fve[n, k] = Σ_{(i,j) ∈ R_k × R_k, (i,j) ≠ (0,0)} C_n[i, j]² / Σ_{i,j} C_n[i, j]²,   R_k = {const, cos k, sin k},

    i.e. the 3×3 block {const, cos k, sin k}² of Nanda et al. 2023 (arXiv:2301.05217, App. neuron clusters)
    minus its (const, const) entry, which centring sets to 0 (so fve[:, 0] = 0). The blocks are disjoint: a
    const-row entry (const, cos k) belongs to block k only; Σ_k fve ≤ 1, the rest being cross-frequency
    terms cos(w_k a)·cos(w_l b), k ≠ l. Zero-variance (dead or constant) neurons get fve = 0.

    Computed without the O(p³·d_mlp) 2D transform: span{cos k, sin k}(a) ⊗ span{cos k, sin k}(b) equals
    span{cos, sin of w_k(a+b)} ⊕ span{cos, sin of w_k(a−b)} (orthogonal for 2k ≢ 0; for k = p/2 the two
    coincide), so block k's diagonal part is (|ĝ₊(k)|² + |ĝ₋(k)|²)/p with g±(s) = Σ_{a±b≡s} f(a, b) and ĝ its
    1D basis coefficients; the const-row/column parts are |r̂(k)|²/p and |ĉ(k)|²/p with r, c the sums of f over
    a and over b. Equal to the 2D einsum definition (tested against :func:`neuron_spectrum`).
    """
    return _neuron_fve_and_max(acts, p)[0]


def _neuron_fve_and_max(acts: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """:func:`neuron_fve` and each neuron's largest activation [d_mlp], sharing one pass over the grid."""
    m = acts.shape[-1]
    acts = acts.reshape(p * p, m)
    mean = acts.mean(0)
    f = acts - mean  # centred, and contiguous (a private copy) even when acts is a strided slice of the cache
    grid = f.view(p, p, m)
    basis = fourier_basis(p, f.dtype, f.device)
    s_idx, d_idx = _sum_diff_index(p, f.device)
    sums = torch.stack([
        f.new_zeros(p, m).index_add_(0, s_idx, f),  # g+(s) = Σ_{a+b≡s} f
        f.new_zeros(p, m).index_add_(0, d_idx, f),  # g−(d) = Σ_{a−b≡d} f
        grid.sum(0),  # r(b) = Σ_a f   (const along a ⊗ frequency along b)
        grid.sum(1),  # c(a) = Σ_b f   (frequency along a ⊗ const along b)
    ])  # [4, p, m]
    coef_sq = (basis @ sums).pow(2) / p  # [4, p (basis row), m]: energy of f on each 2D subspace
    weight = torch.ones(4, n_freqs(p) + 1, dtype=f.dtype, device=f.device)
    if p % 2 == 0:
        weight[1, -1] = 0.0  # k = p/2: cos w_k(a−b) = cos w_k(a+b), counted once
    energy = (per_freq(coef_sq, p, dim=1) * weight[:, :, None]).sum(0).T  # [m, K+1]
    energy[:, 0] = 0.0  # (const, const) is removed by centring
    peak = f.amax(0) + mean
    total = f.square_().sum(0)  # Σ f² (Parseval: = Σ_{i,j} C[i, j]²); f is not used after this
    live = total > 1e-10 * (p * p) * mean.pow(2)  # not constant up to rounding
    fve = torch.where(live[:, None], energy / total.clamp_min(torch.finfo(f.dtype).tiny)[:, None], 0.0)
    return fve, peak


def _neuron_outputs(ctx: ProbeContext) -> dict[str, Any]:
    p, d_mlp, kp1 = ctx.p, ctx.model.cfg.d_mlp, n_freqs(ctx.p) + 1
    if _last_mlp(ctx.model) is None:
        nan = float("nan")
        return {
            "fve": torch.full((d_mlp, kp1), nan), "dominant_freq": torch.full((d_mlp,), nan),
            "dominant_fve": torch.full((d_mlp,), nan), "cluster_sizes": torch.full((kp1,), nan),
            "n_clustered": nan, "frac_clustered": nan, "n_dead": nan,
        }
    post = ctx.cache["post", ctx.model.cfg.n_layers - 1][:, -1]  # [p*p, d_mlp] at the `=` position
    fve, peak = _neuron_fve_and_max(post, p)
    dead = peak <= 0  # never fires (ReLU output 0 / GELU output ≤ 0 on every input)
    dominant_fve, dominant = fve[:, 1:].max(1)
    dominant = torch.where(dominant_fve > 0, dominant + 1, 0)  # 0: no variance to explain
    clustered = (dominant_fve >= ctx.params["fve_threshold"]) & ~dead
    cluster_sizes = torch.zeros(kp1, device=fve.device).index_add_(
        0, dominant[clustered], torch.ones(int(clustered.sum()), device=fve.device))
    return {
        "fve": fve.float(), "dominant_freq": dominant.float(), "dominant_fve": dominant_fve.float(),
        "cluster_sizes": cluster_sizes, "n_clustered": int(clustered.sum()),
        "frac_clustered": float(clustered.float().mean()), "n_dead": int(dead.sum()),
    }


@probe("fourier.neurons")
def neurons_probe(ctx: ProbeContext) -> dict[str, Any]:
    """Per-neuron Fourier analysis of the last layer's MLP activations at the ``=`` position over the p×p grid.

    fve [d_mlp, K+1]: :func:`neuron_fve` (3×3 block {const, cos k, sin k}² minus (const, const) of the centred
    activations, Nanda et al. 2023, arXiv:2301.05217); dominant_freq = argmax_{k≥1} fve (0 for zero-variance
    neurons) and dominant_fve its value; cluster_sizes[k] = #{live neurons with fve[:, k] ≥ fve_threshold}
    (Nanda et al. use 0.85); n_clustered = Σ cluster_sizes, frac_clustered = n_clustered / d_mlp;
    n_dead = #{neurons whose activation is ≤ 0 on every input}. NaN-filled for attention-only models.
    """
    return ctx.memo("fourier.neurons", lambda: _neuron_outputs(ctx))


# ============================================================================ key frequencies
def _key_frequencies(ctx: ProbeContext) -> Tensor:
    K = n_freqs(ctx.p)
    key = torch.zeros(K + 1, dtype=torch.bool)
    sizes = ctx.memo("fourier.neurons", lambda: _neuron_outputs(ctx))["cluster_sizes"].cpu()
    key |= torch.nan_to_num(sizes, nan=0.0) >= ctx.params["key_freq_min_neurons"]
    if _last_mlp(ctx.model) is None:  # attention-only: the residual stream feeds the unembedding directly
        norms = fourier_norms(answer_unembed(ctx.model), ctx.p, axis=1)[0]
    else:
        norms = _logit_map_outputs(ctx)["norms"]
    norms = norms[1:].double().cpu()
    if norms.max() > 0:
        by_norm = norms >= ctx.params["key_freq_wl_fraction"] * norms.max()
        above_floor = norms.pow(2) >= ctx.params["key_freq_wl_min_ratio"] * norms.pow(2).mean()
        key[1:] |= by_norm & above_floor
    key[0] = False
    key &= _logit_share(ctx) >= ctx.params.get("key_freq_min_logit_share", 0.0)  # evidence: the logits use k
    return torch.nonzero(key).squeeze(1)


def _logit_share(ctx: ProbeContext) -> Tensor:
    """[K+1] share of the centred logit variance on cos(w_k(a + b − c)) (:func:`logit_variance_shares`)."""
    return ctx.memo("fourier.logit_share", lambda: logit_variance_shares(ctx.logits, ctx.p))


def key_frequencies(ctx: ProbeContext) -> Tensor:
    """Sorted int64 tensor of the key frequencies k ∈ 1..K of the checkpoint (memoized as ``ctx.memo("key_freqs")``).

    Rule (thresholds in ``ctx.params``): k is key if
      (a) its neuron cluster holds ≥ ``key_freq_min_neurons`` neurons (neurons of the last MLP layer whose
          :func:`neuron_fve` on k is ≥ ``fve_threshold``; cf. Nanda et al. 2023, arXiv:2301.05217, who read the
          key frequencies off the neuron clusters and W_L), or
      (b) its W_L norm (``fourier.logit_map`` ``norms``) is ≥ ``key_freq_wl_fraction`` × the largest, AND its
          squared norm is ≥ ``key_freq_wl_min_ratio`` × the mean squared norm over k = 1..K. The second
          condition keeps (b) silent when the W_L spectrum is flat (e.g. at initialisation, where every
          frequency is within a few percent of the largest).
    AND, whichever of (a) or (b) holds, (c) frequency k carries ≥ ``key_freq_min_logit_share`` of the centred
    logit variance (:func:`logit_variance_shares`): the significance floor. At initialisation and in a model that
    only memorised, the logit variance is spread over all p²(p−1) directions and no single cos(w_k(a+b−c)) holds
    more than a fraction of a percent of it, while each key frequency of a grokked model holds several percent
    (docs/probes.md, "Key frequencies"). Without (c), (a) and (b) fire on chance structure in memorising runs.
    Attention-only models have no neurons and no W_L: (b) is applied to W_U instead.
    """
    return ctx.memo("key_freqs", lambda: _key_frequencies(ctx))


@probe("fourier.key_freqs")
def key_freqs_probe(ctx: ProbeContext) -> dict[str, Any]:
    """Key frequencies by the rule of :func:`key_frequencies`: is_key [K+1] (1.0 for key k), n_key."""
    key = key_frequencies(ctx)
    is_key = torch.zeros(n_freqs(ctx.p) + 1)
    is_key[key] = 1.0
    return {"is_key": is_key, "n_key": int(key.numel())}


# ============================================================================ logits
_DIFF_INDEX: dict[tuple[int, str], Tensor] = {}


def _sum_minus_class_index(p: int, device: torch.device) -> Tensor:
    """[p²] int64: (s − c) mod p for every (s, c), row-major; cached per p."""
    key = (p, str(device))
    if key not in _DIFF_INDEX:
        x = torch.arange(p, device=device)
        _DIFF_INDEX[key] = ((x[:, None] - x[None, :]) % p).reshape(-1)
    return _DIFF_INDEX[key]


def logit_fourier(logits: Tensor, p: int, key: Tensor | None = None) -> tuple[Tensor, float, float]:
    """Fit the logits on the regressors R_k(a, b, c) = cos(w_k(a + b − c)), k = 1..K (Nanda et al. 2023,
    arXiv:2301.05217, §5.1: the logits of the trained model are ≈ Σ_k α_k cos(w_k(a + b − c))).

    logits: [p*p, p], row a*p + b, column c. With L̃ = logits minus their mean over c for each input (the
    softmax ignores a per-input shift), the R_k are mutually orthogonal and have zero mean over c, so

        coef[k] = ⟨L̃, R_k⟩ / ⟨R_k, R_k⟩,   ⟨R_k, R_k⟩ = p³/2 (p³ if k = p/2),

    a pure cos(w_k(a + b − c)) logit gives coef[k] = 1 (coef[0] = NaN), and the fraction of the centred logit
    variance explained by a set S of frequencies is fve(S) = Σ_{k∈S} coef[k]² ⟨R_k, R_k⟩ / ‖L̃‖².
    Returns (coef [K+1], fve(key), fve(1..K)); fve(key) is NaN when ``key`` is None.
    ⟨L̃, R_k⟩ = Σ_d N[d] cos(w_k d) with N[d] = Σ_{a+b−c≡d} L[a, b, c] (two scatter-adds, O(p³)).
    """
    coef, explained, total = _logit_fit(logits, p)
    if total <= 0:
        return coef.float(), float("nan"), float("nan")
    fve_all = float(explained[1:].sum() / total)
    fve_key = float("nan") if key is None else float(explained[key].sum() / total)
    return coef.float(), fve_key, fve_all


def logit_variance_shares(logits: Tensor, p: int) -> Tensor:
    """[K+1] float64: the share of the centred logit variance explained by each cos(w_k(a + b − c)) alone,
    coef[k]² ⟨R_k, R_k⟩ / ‖L̃‖² (:func:`logit_fourier`); index 0 is 0, all zeros for constant logits."""
    _, explained, total = _logit_fit(logits, p)
    share = explained / total if total > 0 else torch.zeros_like(explained)
    share[0] = 0.0
    return share.cpu()


def logit_shares(coef, fve_all: float, p: int):
    """The same shares as :func:`logit_variance_shares`, recovered from the cached ``fourier.logits`` outputs:
    share[k] = fve_all · coef[k]² w_k / Σ_j coef[j]² w_j with w_k = ⟨R_k, R_k⟩ / (p³/2) (2 for k = p/2, else 1).
    Takes and returns NumPy arrays [K+1] (index 0: 0; NaN where fve_all is NaN)."""

    c = np.nan_to_num(np.asarray(coef, dtype=np.float64))
    w = np.ones_like(c)
    if p % 2 == 0:
        w[-1] = 2.0
    e = c ** 2 * w
    e[0] = 0.0
    tot = e.sum()
    return np.zeros_like(e) if tot <= 0 else fve_all * e / tot


def _logit_fit(logits: Tensor, p: int) -> tuple[Tensor, Tensor, Tensor]:
    """(coef [K+1], explained [K+1] = coef² ⟨R_k, R_k⟩, ‖L̃‖²) of :func:`logit_fourier`, in float64."""
    if logits.shape != (p * p, p):
        raise ValueError(f"logits: expected shape [{p * p}, {p}], got {tuple(logits.shape)}")
    L = logits.detach().contiguous()
    # N[d] = Σ_{a+b−c≡d} L[a, b, c]: first fold a + b ≡ s (rows), then s − c ≡ d. The per-input centring is
    # skipped here: every R_k, k ≥ 1, has zero mean over c, so it does not change ⟨L̃, R_k⟩.
    s_idx = _sum_diff_index(p, L.device)[0]
    G = L.new_zeros(p, p).index_add_(0, s_idx, L).double()  # [s, c]
    N = G.new_zeros(p).index_add_(0, _sum_minus_class_index(p, L.device), G.reshape(-1))
    K = n_freqs(p)
    k = torch.arange(K + 1, dtype=torch.float64, device=L.device)
    cos = torch.cos((2 * math.pi / p) * k[:, None] * torch.arange(p, dtype=torch.float64, device=L.device))
    reg_sq = cos.pow(2).sum(1) * p * p  # ⟨R_k, R_k⟩ = p² Σ_d cos²(w_k d)
    coef = (cos @ N) / reg_sq
    coef[0] = float("nan")
    explained = coef.pow(2) * reg_sq  # [K+1]
    centred = (L - L.mean(1, keepdim=True)).reshape(-1).double()
    return coef, explained, centred @ centred  # ‖L̃‖²


@probe("fourier.logits")
def logits_probe(ctx: ProbeContext) -> dict[str, Any]:
    """Coefficients of the last-position logits on cos(w_k(a + b − c)) and the fraction of the (per-input
    centred) logit variance explained by the key frequencies and by all frequencies: :func:`logit_fourier`
    (Nanda et al. 2023, arXiv:2301.05217, §5.1). Defined for every operation; the structure is that of a + b.
    """
    coef, fve_key, fve_all = logit_fourier(ctx.logits, ctx.p, key_frequencies(ctx))
    return {"coef": coef, "fve_key": fve_key, "fve_all": fve_all}
