"""The attention-and-sinks section of a sequence-task diff report (:mod:`probes.diff_seq`): tables
and figures of the ``attention.seq_sinks`` and ``attention.sparsity`` measures before and after."""

from __future__ import annotations

from typing import Any

from apps.report_figures import bars
from apps.report_rows import ARROW, at, delta, flat, head_labels
from probes.diff import fmt


def _move(a: Any, b: Any, digits: int = 3) -> str:
    dl = delta(a, b)
    return f"{fmt(a, digits)} {ARROW} {fmt(b, digits)}" + ("" if dl is None else f" ({dl:+.3g})")


def _stream_labels(n: int) -> list[str]:
    """Labels of the L + 1 residual streams ``attention.seq_sinks`` measures: each layer's resid_pre,
    then the last layer's resid_post."""
    return [f"resid_pre {i}" for i in range(n - 1)] + [f"resid_post {n - 2}"]


def summary_rows(d: dict[str, Any]) -> list[list[str]]:
    s = d["sinks"]
    tok = s["first_token"]
    rows = [[f"sink rate on {tok}, {t.replace('_', '-')} queries (% heads·inputs)",
             fmt(s["by_type"][t]["sink_rate"]["a"]), fmt(s["by_type"][t]["sink_rate"]["b"])]
            for t in s["query_types"]]
    rows += [[f"value drain: ‖v W_O‖ of {tok} / others", fmt(s["value_ratio"]["a"]), fmt(s["value_ratio"]["b"])],
             [f"residual peak: largest ‖h‖ of {tok} / others", fmt(s["resid_ratio"]["a"]), fmt(s["resid_ratio"]["b"])],
             [f"readout query effective attended tokens (of {s['n_keys']} keys)", fmt(s["readout_eff_tokens"]["a"]),
              fmt(s["readout_eff_tokens"]["b"])],
             ["readout query attention entropy (nats)", fmt(s["readout_entropy"]["a"]), fmt(s["readout_entropy"]["b"])]]
    return rows


def head_header(d: dict[str, Any]) -> list[str]:
    s = d["sinks"]
    types = [t.replace("_", "-") for t in s["query_types"]]
    return (["head"] + [f"attention on {s['first_token']}, {t} queries" for t in types]
            + [f"effective tokens, {t} queries" for t in types]
            + [f"‖v W_O‖ {s['first_token']}", "‖v W_O‖ others", "readout effective tokens"])


def head_rows(d: dict[str, Any]) -> list[list[str]]:
    """Per head (L{layer}H{head}): before → after (change)."""
    s = d["sinks"]
    cols = [s["by_type"][t]["first_attn"] for t in s["query_types"]]
    cols += [s["by_type"][t]["eff_tokens"] for t in s["query_types"]]
    cols += [s["value_norm_first"], s["value_norm_rest"], s["readout_heads"]["eff_tokens"]]
    labels = head_labels(s["value_norm_first"]["b"])
    flats = [(flat(c["a"]), flat(c["b"])) for c in cols]
    return [[label, *(_move(at(a, i), at(b, i)) for a, b in flats)] for i, label in enumerate(labels)]


STREAM_HEADER = ["stream", "‖h‖ first token", "‖h‖ others", "first / others", "max|h| / median|h|",
                 "inputs with max|h| at the first token"]


def stream_rows(d: dict[str, Any]) -> list[list[str]]:
    s = d["sinks"]
    first, rest = s["resid_norm_first"], s["resid_norm_rest"]
    ratio = {k: [None if f is None or r in (None, 0) else f / r for f, r in zip(first[k], rest[k])] for k in "ab"}
    labels = _stream_labels(len(first["b"]))
    return [[label, _move(first["a"][i], first["b"][i]), _move(rest["a"][i], rest["b"][i]),
             _move(ratio["a"][i], ratio["b"][i]), _move(at(s["massive_ratio"]["a"], i), at(s["massive_ratio"]["b"], i)),
             _move(at(s["massive_at_first"]["a"], i), at(s["massive_at_first"]["b"], i))]
            for i, label in enumerate(labels)]


INTRO = ("Attention on the first token ({tok}) over the run's fixed probe batch, by query type, query 0 left "
         "out (it can only see the first token). Sink rate: Gu et al. 2025's share of heads whose mean attention "
         "to the first token exceeds ε = {eps}. Value drain and residual peak: Guo et al. 2024 (Active-Dormant "
         "attention heads). Massive activations: Sun et al. 2024.")


def intro(d: dict[str, Any]) -> str:
    tok = d["sinks"]["first_token"]
    tok = f"`{tok}`" if tok == "<bos>" else "an ordinary token: the task has no BOS"
    return INTRO.format(tok=tok, eps=d["sinks"]["epsilon"])


def figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Attention on the first token per head and query type, value norms per head, residual norms per stream."""
    s, tok = d["sinks"], d["sinks"]["first_token"]
    labels = head_labels(s["value_norm_first"]["b"])
    figs = [bars(f"Attention on {tok} per head, {t.replace('_', '-')} queries", labels,
                 flat(s["by_type"][t]["first_attn"]["a"]), flat(s["by_type"][t]["first_attn"]["b"]), "head",
                 f"mean attention on {tok}") for t in s["query_types"]]
    figs.append(bars(f"Value drain: ‖v W_O‖ of {tok} per head", labels, flat(s["value_norm_first"]["a"]),
                     flat(s["value_norm_first"]["b"]), "head", "‖v W_O‖"))
    streams = _stream_labels(len(s["resid_norm_first"]["b"]))
    figs.append(bars(f"Residual norm of {tok} per stream", streams, s["resid_norm_first"]["a"],
                     s["resid_norm_first"]["b"], "stream", "‖h‖"))
    return figs
