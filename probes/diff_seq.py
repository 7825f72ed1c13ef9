"""The checkpoint diff on sequence tasks (issue 13): :func:`compare_seq`, called by
:func:`probes.diff.compare` when either checkpoint's run is a sequence task.

A reduced report, in the same plain-data form as the grid report (``DiffReport.data``, with
``"kind": "sequence"``):

* **behaviour**: train and test loss and accuracy over every loss-carrying position of the run's
  whole train and test sets (the training loss, :mod:`interp.losses`), and Σ‖W‖²;
* **weights** and **spectra**: as on the grid (:mod:`probes.diff_sections`);
* **sinks**: the ``attention.seq_sinks`` measures before and after (sink rate and attention on the
  first token by query type, value-state drain, residual-state peak, massive activations) and the
  readout query's attention sparsity (``attention.sparsity``), all on the task's fixed probe batch;
* **representation**: linear CKA between the checkpoints' residual streams and MLP activations at
  the loss-carrying positions of the probe batch (when both runs have the same probe batch);
* **absent**: one line per grid section that does not apply, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.losses import IGNORE_INDEX, cross_entropy, masked_cross_entropy
from interp.store import Run
from probes.diff_sections import SCHEMA_VERSION, linear_cka, plain, spectra, weight_stats
from probes.registry import ProbeContext
from probes.runner import measure_context, merged_params, resolve

SEQ_PROBES = ("attention.sparsity", "attention.seq_sinks")
EVAL_CHUNK = 2048  # inputs per forward when evaluating the train and test sets

#: grid sections a sequence report leaves out, and why ({task} is the task's name)
ABSENT = {
    "fourier": "Fourier: not measured on sequence tasks; the Fourier probes (key frequencies, neuron clusters, "
               "logit coefficients on cos(w_k(a+b−c))) read the p×p grid of a∘b mod p. {why}",
    "flips": "Prediction flips: the p×p map of inputs has no counterpart; the sequence task's inputs are a "
             "sampled set, whose losses and accuracies are in Behaviour.",
    "restricted": "Restricted and excluded loss: defined from the grid task's key frequencies (Nanda et al. 2023).",
}


def _why_no_fourier(task: Any) -> str:
    if getattr(task, "modular", False):
        return (f"Task {task.name} has a modular answer, but its inputs are sequences rather than the grid; the "
                "grid-based Fourier sections are not computed for it.")
    return f"Task {task.name} has no modular structure (no residues mod p to take a Fourier basis over)."


@torch.no_grad()
def evaluate(model: Any, task: Any, cfg: Any, idx: Tensor) -> tuple[float | None, float | None]:
    """(mean loss, accuracy) over the loss-carrying positions of inputs ``idx``, with the training
    loss of the run (:func:`interp.losses.masked_cross_entropy` / ``cross_entropy``), in chunks of
    :data:`EVAL_CHUNK` inputs. (None, None) for an empty set."""
    if len(idx) == 0:
        return None, None
    loss_sum, hits, count = 0.0, 0, 0
    for chunk in idx.split(EVAL_CHUNK):
        x, y = task.inputs[chunk], task.targets[chunk]
        if task.per_position:
            logits = model.forward_all(x)
            n = int((y != IGNORE_INDEX).sum())
            loss = masked_cross_entropy(logits, y, cfg)
            hit = ((logits.argmax(-1) == y) & (y != IGNORE_INDEX)).sum()
        else:
            logits, y = model.forward_last(x), y[:, -1]
            n = len(y)
            loss = cross_entropy(logits, y, cfg)
            hit = (logits.argmax(-1) == y).sum()
        loss_sum += loss.item() * n
        hits += int(hit)
        count += n
    return loss_sum / max(count, 1), hits / max(count, 1)


@dataclass
class SeqSide:
    """One checkpoint of a sequence-task run: probe outputs, losses on the train and test sets, and
    the activations of the probe batch at its loss-carrying positions."""

    run: Run
    step: int
    task: Any
    state_dict: dict[str, Tensor]
    probes: dict[str, dict[str, Any]]
    metrics: dict[str, float | None]
    acts: dict[str, Tensor]  # name -> [rows, d] at the loss-carrying positions of the probe batch
    params: dict[str, Any]

    @classmethod
    def measure(cls, run: Run, step: int, params: dict[str, Any] | None) -> SeqSide:
        model, task, cfg = run.model_at(step), run.task, run.train_config
        ctx = ProbeContext(model=model, task=task, step=step, params=merged_params(params))
        results = measure_context(ctx, resolve(SEQ_PROBES))
        metrics: dict[str, float | None] = {}
        for split in ("train", "test"):
            metrics[f"{split}_loss"], metrics[f"{split}_acc"] = evaluate(model, task, cfg,
                                                                         getattr(task, f"{split}_idx"))
        metrics["ssq_total"] = sum(p.detach().double().pow(2).sum().item() for p in model.parameters())
        cache, n_layers = ctx.full_cache, model.cfg.n_layers
        keep = _probe_loss_mask(task)  # [N, S]
        acts = {f"resid_post.{i}": cache["resid_post", i][keep] for i in range(n_layers)}
        acts |= {f"mlp.{i}": cache["post", i][keep] for i in range(n_layers) if f"blocks.{i}.mlp.hook_post" in cache}
        return cls(run=run, step=step, task=task, state_dict=model.state_dict(), probes=results, metrics=metrics,
                   acts=acts, params=ctx.params)

    def get(self, probe: str, name: str) -> Any:
        return self.probes[probe][name]

    def describe(self) -> dict[str, Any]:
        cfg = self.run.config
        return {"label": f"{self.run.name}@{self.step}", "run": str(self.run.path), "name": self.run.name,
                "step": self.step, "op": None, "task": self.task.name, "p": self.task.p,
                "seq_len": cfg.get("seq_len"), "n_ctx": self.task.n_ctx, "bos": bool(self.task.bos),
                "d_model": cfg.get("d_model"), "d_mlp": cfg.get("d_mlp"), "n_layers": cfg.get("n_layers"),
                "n_heads": cfg.get("n_heads")}


def _probe_loss_mask(task: Any) -> Tensor:
    """[N, S] bool: the loss-carrying positions of the probe batch (the first test inputs)."""
    idx = task.test_idx if task.n_test else task.train_idx
    return task.loss_mask[idx[: len(task.probe_inputs)]]


BEHAVIOUR = (("train_loss", "train loss"), ("test_loss", "test loss"), ("train_acc", "train accuracy"),
             ("test_acc", "test accuracy"), ("ssq_total", "sum of squared weights"))


def _pair(sa: SeqSide, sb: SeqSide, probe: str, name: str) -> dict[str, Any]:
    a = sa.probes[probe].get(name)
    b = sb.probes[probe].get(name)
    return {"a": plain(a), "b": plain(b)}


def sinks_section(sa: SeqSide, sb: SeqSide) -> dict[str, Any]:
    """The ``attention.seq_sinks`` measures and the readout query's sparsity, before and after."""
    types = [k.removeprefix("sink_rate_") for k in sb.probes["attention.seq_sinks"] if k.startswith("sink_rate_")]
    sp = "attention.seq_sinks"
    out: dict[str, Any] = {
        "first_token": "<bos>" if sb.task.bos else "first token",
        "epsilon": sb.params["sink_epsilon"],
        "query_types": types,
        "by_type": {t: {"sink_rate": _pair(sa, sb, sp, f"sink_rate_{t}"),
                        "head_sink_rate": _pair(sa, sb, sp, f"head_sink_rate_{t}"),
                        "first_attn": _pair(sa, sb, sp, f"first_attn_{t}"),
                        "eff_tokens": _pair(sa, sb, sp, f"eff_tokens_{t}")} for t in types},
    }
    for name in ("value_norm_first", "value_norm_rest", "value_ratio", "resid_norm_first", "resid_norm_rest",
                 "resid_ratio", "massive_ratio", "massive_at_first"):
        out[name] = _pair(sa, sb, sp, name)
    ap = "attention.sparsity"

    def readout(s: SeqSide, name: str) -> Any:
        return plain(np.asarray(s.get(ap, name))[..., -1])  # [L, H] at the last (readout) query

    out["readout_eff_tokens"] = _pair(sa, sb, ap, "readout_eff_tokens")
    out["readout_entropy"] = _pair(sa, sb, ap, "readout_entropy")
    out["readout_heads"] = {n: {"a": readout(sa, n), "b": readout(sb, n)} for n in ("eff_tokens", "entropy")}
    out["n_keys"] = sb.task.n_ctx
    return out


def representation_seq(sa: SeqSide, sb: SeqSide) -> list[dict[str, Any]]:
    """Linear CKA between the two checkpoints' activations over the probe batch's loss-carrying positions."""
    rows = []
    for name, x in sa.acts.items():
        y = sb.acts.get(name)
        if y is None or len(y) != len(x):
            continue
        kind, layer = name.split(".")
        what = f"MLP activations of layer {layer}" if kind == "mlp" else f"residual stream after layer {layer}"
        rows.append({"name": name, "what": what, "cka": linear_cka(x, y)})
    return sorted(rows, key=lambda r: (not r["name"].startswith("mlp"), r["name"]))


def same_probe_batch(sa: SeqSide, sb: SeqSide) -> bool:
    ta, tb = sa.task, sb.task
    return (getattr(ta, "kind", "grid") != "grid" and getattr(tb, "kind", "grid") != "grid"
            and ta.probe_inputs.shape == tb.probe_inputs.shape and torch.equal(ta.probe_inputs, tb.probe_inputs)
            and torch.equal(_probe_loss_mask(ta), _probe_loss_mask(tb)))


def compare_seq(ca: Any, cb: Any, top_k: int, params: dict[str, Any] | None) -> dict[str, Any]:
    """The report's ``data`` for two checkpoints of sequence-task runs (``ca``, ``cb``:
    :class:`probes.diff.Checkpoint`); see the module docstring. The summary is added by the caller."""
    sa, sb = SeqSide.measure(ca.run, ca.step, params), SeqSide.measure(cb.run, cb.step, params)
    same_run = ca.run.path.resolve() == cb.run.path.resolve()
    same_shapes = {k: v.shape for k, v in sa.state_dict.items()} == {k: v.shape for k, v in sb.state_dict.items()}
    aligned = same_run and same_shapes
    same_inputs = same_probe_batch(sa, sb)
    notes = []
    if not same_run:
        notes.append("The checkpoints come from different runs: heads and weight coordinates are not aligned "
                     "across runs, so only basis-free quantities are compared (norms, singular values, CKA, losses, "
                     "sink measures); per-parameter changes are omitted.")
    elif not same_shapes:
        notes.append("The checkpoints' parameter shapes differ: per-parameter changes are omitted.")
    if not same_inputs:
        notes.append(f"The runs' probe batches differ ({sa.task.name} vs {sb.task.name} or another data setting): "
                     "CKA is omitted and the sink measures are taken on each run's own batch.")
    absent = {k: v.format(why=_why_no_fourier(sb.task)) for k, v in ABSENT.items()}
    return {
        "schema": SCHEMA_VERSION, "kind": "sequence",
        "a": sa.describe(), "b": sb.describe(),
        "same_run": same_run, "aligned": aligned, "same_inputs": same_inputs, "same_task": same_inputs,
        "notes": notes,
        "params": plain({k: v for k, v in sa.params.items() if isinstance(v, int | float | str)}),
        "weights": plain(weight_stats(sa.state_dict, sb.state_dict, aligned)),
        "spectra": {"k": top_k, "matrices": plain(spectra(sa.state_dict, sb.state_dict, top_k))},
        "behaviour": {"metrics": [{"name": n, "label": label, "a": plain(sa.metrics[n]), "b": plain(sb.metrics[n])}
                                  for n, label in BEHAVIOUR],
                      "scope": "every loss-carrying position of the whole train / test set"},
        "sinks": sinks_section(sa, sb),
        "representation": representation_seq(sa, sb) if same_inputs else [],
        "absent": absent,
    }
