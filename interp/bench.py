"""``make bench``: performance targets, measured on this machine, written as JSON and a table.

Each section runs in its own subprocess (so its peak RSS is its own) and returns rows
``{"name", "value", "unit", "target", "ok"}``. Sections:

* ``train`` (here): fast-path steps/s against a full-sequence baseline kept below, the
  ``demo`` preset's wall time to ≥99% test accuracy, and the full 40k-step ``nanda`` run
  (skipped with ``--quick``);
* ``probes`` (``probes/bench.py``), ``diff`` (``interp/bench_diff.py``),
  ``sweep`` (``interp/bench_sweep.py``), ``dashboard`` (``apps/bench.py``).

Ratios are measured within one process run, interleaved, because the machines are shared.

    python -m interp.bench [--quick] [--only train,probes] [--out bench-results/bench.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp.perf import reuse_freed_memory

SECTIONS = {
    "train": "interp.bench",
    "probes": "probes.bench",
    "diff": "interp.bench_diff",
    "sweep": "interp.bench_sweep",
    "dashboard": "apps.bench",
}


def row(name: str, value: float, unit: str, target: str = "", ok: bool | None = None) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target, "ok": ok}


# ====================================================================== baseline
class FullSequenceBaseline(nn.Module):
    """The same one-layer model written the straightforward way (as in the 2023 code):
    every position goes through attention, MLP and unembedding, and the loss then
    takes the last position's logits. Shares nothing with ``interp.model``'s fast path."""

    def __init__(self, sd: dict[str, Tensor]):
        super().__init__()
        names = ["embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_Q", "blocks.0.attn.W_K", "blocks.0.attn.W_V",
                 "blocks.0.attn.W_O", "blocks.0.mlp.W_in", "blocks.0.mlp.b_in", "blocks.0.mlp.W_out",
                 "blocks.0.mlp.b_out", "unembed.W_U"]
        self.w = nn.ParameterDict({n.replace(".", "_"): nn.Parameter(sd[n].clone()) for n in names})

    def forward(self, x: Tensor) -> Tensor:  # [b, s] -> [b, s, p]
        w = self.w
        resid = w["embed_W_E"][x] + w["pos_embed_W_pos"]
        q = torch.einsum("bsd,hde->bshe", resid, w["blocks_0_attn_W_Q"])
        k = torch.einsum("bsd,hde->bshe", resid, w["blocks_0_attn_W_K"])
        v = torch.einsum("bsd,hde->bshe", resid, w["blocks_0_attn_W_V"])
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        mask = torch.tril(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool))
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        resid = resid + torch.einsum("bqhe,hed->bqd", z, w["blocks_0_attn_W_O"])
        hidden = F.relu(resid @ w["blocks_0_mlp_W_in"] + w["blocks_0_mlp_b_in"])
        resid = resid + hidden @ w["blocks_0_mlp_W_out"] + w["blocks_0_mlp_b_out"]
        return resid @ w["unembed_W_U"]


def _step_time(forward, params, x: Tensor, y: Tensor, steps: int) -> float:
    """Seconds per full-batch AdamW step (fused AdamW and float64 loss, as in training)."""
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0, fused=True)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(forward(x).double(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def bench_fast_path(rounds: int = 5, steps: int = 10) -> list[dict]:
    from interp.train import preset

    reuse_freed_memory()  # as the trainer does (process-wide, so the baseline gets it too)
    cfg = preset("nanda")
    model = cfg.build_model()
    base = FullSequenceBaseline(model.state_dict())
    task = cfg.task()
    x, y = task.inputs[task.train_idx], task.labels[task.train_idx]
    with torch.no_grad():
        err = (base(x)[:, -1] - model.forward_last(x)).abs().max().item()
    assert err < 1e-4, f"baseline and fast path disagree by {err}"
    fast, slow = [], []
    _step_time(model.forward_last, list(model.parameters()), x, y, 2)  # warm-up
    _step_time(lambda t: base(t)[:, -1], list(base.parameters()), x, y, 2)
    for _ in range(rounds):  # interleaved so load changes hit both alike
        fast.append(_step_time(model.forward_last, list(model.parameters()), x, y, steps))
        slow.append(_step_time(lambda t: base(t)[:, -1], list(base.parameters()), x, y, steps))
    f, s = statistics.median(fast), statistics.median(slow)
    return [
        row("train: fast path (nanda, full batch)", 1 / f, "steps/s"),
        row("train: full-sequence baseline", 1 / s, "steps/s"),
        row("train: fast path / baseline", s / f, "x", "≥ 5", s / f >= 5),
    ]


def bench_preset(name: str, target_s: float, budget_note: str) -> list[dict]:
    from interp.metrics import grok_steps
    from interp.train import preset, train

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = train(preset(name), Path(tmp) / name, progress=False)
        total = time.perf_counter() - t0
        m, n_ckpt = run.metrics, len(run.steps)
        g = grok_steps(m)
        grok_wall = float(m.loc[m.step == g["grokked_step"], "wall_time"].iloc[0]) if g["grokked_step"] else math.nan
    rows = [row(f"train: {name} grokked at step", g["grokked_step"] or math.nan, "step", budget_note,
                g["grokked_step"] is not None),
            row(f"train: {name} total wall time ({m.step.max()} steps, {n_ckpt} checkpoints)", total, "s")]
    if name == "demo":
        rows.append(row("train: demo wall time to ≥99% test acc", grok_wall, "s", f"≤ {target_s:.0f}",
                        grok_wall <= target_s))
    else:
        rows[-1].update(target=f"≤ {target_s:.0f}", ok=total <= target_s)
    return rows


def bench(quick: bool = False) -> list[dict]:
    rows = bench_fast_path()
    rows += bench_preset("demo", 180, "≤ 5000")
    if not quick:
        rows += bench_preset("nanda", 1200, "5000–25000")
        step = rows[-2]["value"]
        rows[-2]["ok"] = isinstance(step, int) and 5_000 <= step <= 25_000
    return rows


# ====================================================================== runner
def _run_section(module: str, quick: bool) -> list[dict]:
    mod = importlib.import_module(module)
    try:
        rows = mod.bench(quick=quick)
    except TypeError:
        rows = mod.bench()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [*rows, row(f"{module}: peak RSS", peak_mb, "MiB")]


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else (f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}")
    return str(v)


def _target(t) -> str:
    """Sections give targets as text ("≤ 5") or as a number (an upper bound)."""
    return "" if t is None else (f"≤ {t:g}" if isinstance(t, int | float) else str(t))


def print_table(rows: list[dict]) -> None:
    w = max(len(r["name"]) for r in rows)
    print(f"{'benchmark':<{w}}  {'value':>10}  {'unit':<8}  {'target':<12}  ok")
    for r in rows:
        ok = {True: "yes", False: "NO", None: ""}[r.get("ok")]
        print(f"{r['name']:<{w}}  {_fmt(r['value']):>10}  {r['unit']:<8}  {_target(r.get('target')):<12}  {ok}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m interp.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 40k-step nanda run and other long parts")
    ap.add_argument("--only", help=f"comma-separated sections from {','.join(SECTIONS)}")
    ap.add_argument("--out", default="bench-results/bench.json")
    ap.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section, print JSON
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    if args.section:
        print("BENCH_JSON " + json.dumps(_run_section(SECTIONS[args.section], args.quick)))
        return 0
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        print(f"bench: unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    rows: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__, "threads": 2,
            "quick": args.quick, "sections": names}
    for name in names:
        print(f"== {name}", flush=True)
        cmd = [sys.executable, "-m", "interp.bench", "--section", name] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")]
        if proc.returncode or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            rows.append(row(f"{name}: FAILED ({tail[0][:100]})", math.nan, "", "", False))
            out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
            continue
        section_rows = json.loads(lines[-1][len("BENCH_JSON "):])
        rows += section_rows
        out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))  # after each section: keep what ran
        print_table(section_rows)
    print(f"\n== all sections ({out})")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
