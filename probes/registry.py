"""Probe registry and the per-checkpoint context every probe receives.

A probe is a function ``fn(ctx: ProbeContext) -> dict[str, value]`` registered with
``@probe("area.name")``. Values that are Python/NumPy scalars or 0-d tensors are
*scalars* (stored long-format in ``probes/scalars.parquet``); anything with one
or more dimensions is an *array* (stacked over steps in ``probes/<probe>.safetensors``).
Arrays must have the same shape at every checkpoint of a run (pad with NaN
rather than returning variable-length results).

The context runs the model's forward pass over the whole p×p grid at most once,
lazily, and shares it (``ctx.cache``, an ``ActivationCache`` from
``Transformer.readout_cache``) among all probes measuring that checkpoint.
``ctx.memo(key, fn)`` shares any other derived quantity (e.g. the key frequencies
that the progress measures need).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor
from transformer_lens import ActivationCache

from interp.tasks import Task

ProbeFn = Callable[["ProbeContext"], dict[str, Any]]


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    fn: ProbeFn
    version: int = 1
    default: bool = True
    description: str = ""
    uses: tuple[str, ...] = ()  # run-level params (RUN_LEVEL_PARAMS) this probe reads
    tasks: tuple[str, ...] | None = None  # task kinds it applies to (see :func:`applies`); None: all
    needs_mlp: bool = False  # reads MLP neurons: does not apply to attention-only models

    def reason_skipped(self, task: Any, attn_only: bool = False) -> str:
        """Why this probe does not apply to ``task`` and a model that is ``attn_only`` or not ("" when it does)."""
        if self.needs_mlp and attn_only:
            return "reads MLP neurons; this model is attention-only"
        return applies(self.tasks, task)


REGISTRY: dict[str, ProbeSpec] = {}

#: parameters fixed for a whole run rather than per checkpoint; a probe's cache depends on
#: one of these only if the probe declares it in ``@probe(..., uses=...)``
RUN_LEVEL_PARAMS = frozenset({"key_freqs", "watch_neurons"})

#: probe areas that read the p×p grid of a∘b mod p (its Fourier basis, its train/test cells): they
#: apply to grid tasks only unless they declare ``tasks`` themselves (issue 13)
GRID_AREAS = ("fourier.", "progress.", "li2")


def applies(tasks: tuple[str, ...] | None, task: Any) -> str:
    """"" when a probe declaring ``tasks`` applies to ``task``, else the reason it does not.

    ``tasks`` holds task kinds: "grid" (the p×p tasks of :mod:`interp.tasks`), a sequence task's
    name (:data:`interp.seqtasks.SEQ_TASKS`), "sequence" (every sequence task), "bos" (tasks whose
    inputs start with a BOS token) or "modular" (tokens 0..p−1 and outputs are residues mod p: the
    grid tasks, ``sum``, ``sparse_sum``). None: every task."""
    if tasks is None:
        return ""
    kind = getattr(task, "kind", "grid")
    groups = {kind, "sequence" if kind != "grid" else "grid"}
    if getattr(task, "bos_token", None) is not None:
        groups.add("bos")
    if getattr(task, "modular", False):  # tokens 0..p−1 and outputs are residues mod p (grid, sum, sparse_sum)
        groups.add("modular")
    if groups & set(tasks):
        return ""
    return f"applies to {', '.join(tasks)} tasks; this run's task is {kind}"


def probe(name: str, *, version: int = 1, default: bool = True, uses: tuple[str, ...] = (),
          tasks: tuple[str, ...] | None = None, needs_mlp: bool = False) -> Callable[[ProbeFn], ProbeFn]:
    """Register ``fn`` as probe ``name``. Bump ``version`` when its definition changes:
    cached results of an older version are recomputed. ``default=False`` probes run
    only when asked for by name. ``uses`` names the run-level parameters
    (:data:`RUN_LEVEL_PARAMS`) the probe reads; only those probes' caches depend on them.
    ``tasks`` names the task kinds it applies to (:func:`applies`); by default every task, except
    the :data:`GRID_AREAS` probes, which apply to grid tasks only. ``needs_mlp``: the probe reads MLP
    neurons and does not apply to attention-only models (skipped, as for a task it does not apply to)."""

    unknown = set(uses) - RUN_LEVEL_PARAMS
    if unknown:
        raise ValueError(f"probe {name}: uses={sorted(unknown)} are not run-level params {sorted(RUN_LEVEL_PARAMS)}")

    def register(fn: ProbeFn) -> ProbeFn:
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        kinds = tasks if tasks is not None else (("grid",) if name.startswith(GRID_AREAS) else None)
        REGISTRY[name] = ProbeSpec(name=name, fn=fn, version=version, default=default, description=doc,
                                   uses=tuple(uses), tasks=kinds, needs_mlp=needs_mlp)
        return fn

    return register


def available(default_only: bool = False) -> list[str]:
    """Names of registered probes (built-in ones are imported by ``import probes``)."""
    return sorted(n for n, s in REGISTRY.items() if s.default or not default_only)


@dataclass
class ProbeContext:
    """What a probe sees of one checkpoint.

    model: a ``Transformer`` (or any HookedRootModule with ``cfg`` and ``run_with_cache``)
    task: the run's :class:`~interp.tasks.Task`; ``inputs`` [p², 3] is the whole grid
    step: the checkpoint's step (None for a model held in memory)
    params: probe parameters (thresholds etc.), see :data:`DEFAULT_PARAMS`
    """

    model: Any
    task: Task
    step: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.params = {**DEFAULT_PARAMS, **self.params}

    @property
    def p(self) -> int:
        return self.task.p

    @property
    def inputs(self) -> Tensor:  # [p*p, 3]; sequence tasks: the fixed probe batch [N, n_ctx]
        return self.task.probe_inputs

    @property
    def labels(self) -> Tensor:  # [p*p]
        return self.task.labels

    @property
    def train_mask(self) -> Tensor:  # [p*p] bool
        return self.task.train_mask

    @property
    def test_mask(self) -> Tensor:  # [p*p] bool
        return self.task.test_mask

    @cached_property
    def _forward(self) -> tuple[Tensor, ActivationCache]:
        with torch.no_grad():
            if hasattr(self.model, "readout_cache") and getattr(self.task, "kind", "grid") == "grid":
                return self.model.readout_cache(self.inputs)
            logits, cache = self.model.run_with_cache(self.inputs)
        return logits[:, -1], cache

    @property
    def cache(self) -> ActivationCache:
        """Activations over the p×p grid, computed once: ``Transformer.readout_cache`` (every
        attention pattern, value and residual input; the last layer's MLP and residual outputs at
        the ``=`` position only, with a position axis of length 1, so index them ``[:, -1]``), or
        ``run_with_cache`` for models without it. :attr:`full_cache` has every position."""
        return self._forward[1]

    @cached_property
    def full_cache(self) -> ActivationCache:
        """``run_with_cache`` over the p×p grid: every hook at every position (several times the
        cost of :attr:`cache`; for custom probes that need the last layer at positions a, b)."""
        if not hasattr(self.model, "readout_cache") or getattr(self.task, "kind", "grid") != "grid":
            return self.cache  # already run_with_cache's: no second forward
        with torch.no_grad():
            return self.model.run_with_cache(self.inputs)[1]

    @property
    def logits(self) -> Tensor:
        """[p*p, p] logits at the last (``=``) position: the p answer classes (a model that also
        outputs the ``=`` class, ``output_eq``, has it dropped, as Nanda et al. 2023's metrics do)."""
        return self._forward[0][:, : self.p]

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        """Compute ``fn()`` once per checkpoint and share it between probes."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]


#: default probe parameters; override with ``probes.run(..., params={...})``
DEFAULT_PARAMS: dict[str, Any] = {
    "fve_threshold": 0.85,  # a neuron belongs to a frequency cluster if that frequency's FVE >= this
    "key_freq_min_neurons": 10,  # ... and a frequency is key if its cluster has >= this many neurons
    "key_freq_wl_fraction": 0.5,  # ... or its W_L norm is >= this fraction of the largest
    "key_freq_wl_min_ratio": 2.0,  # ... and its squared W_L norm is >= this many times the mean (flat spectra: none)
    "key_freq_min_logit_share": 0.02,  # ... and (issue 14) it carries >= this share of the centred logit variance
    "sink_epsilon": 0.3,  # Gu et al. 2025 sink threshold on key importance
    # Frequencies the progress measures (restricted/excluded loss, Li2 key share) are measured
    # against. None: each checkpoint's own key frequencies. ``probes.run`` sets it to the final
    # checkpoint's key frequencies by default, as Nanda et al. 2023 measure progress towards
    # the final circuit.
    "key_freqs": None,
    # Neurons the neuron animation watches, as [neuron, frequency] pairs (``fourier.neuron_acts``). None: each
    # checkpoint's own choice; ``probes.run`` fixes them for the whole run from its final checkpoint
    # (``probes.frames.watched_neurons``), so every frame shows the same neurons.
    "watch_neurons": None,
    "clock_pizza_triples": 100,
    "clock_pizza_seed": 0,
}
