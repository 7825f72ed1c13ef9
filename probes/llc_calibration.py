"""Calibration of the LLC probe's SGLD sampler (docs/llc.md; devinterp's guidance).

    python -m probes.llc_calibration RUN [--lr 1e-5,1e-4,1e-3] [--gamma 10,100,1000] [--nbeta 0]
                                        [--draws 200] [--chains 2] [--out TABLE.csv]

For three checkpoints of RUN — initialisation, mid-transition (the checkpoint nearest the middle
of [step train acc reached 100%, step test acc reached 99%]) and the last — and every setting
(step size ε = ``llc_lr``, localisation γ = ``llc_localization``, inverse temperature nβ =
``llc_nbeta``, 0 meaning devinterp's default batch / log batch), estimate the LLC
(:func:`probes.llc.estimate`) and check its loss trace (:func:`probes.llc.trace_check`). Prints
one Markdown row per (checkpoint, setting): LLC mean ± std over chains, the trace's rise and
drift, whether it converged and stayed local (:func:`probes.llc.trace_check`), and the seconds taken.
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from collections.abc import Sequence

import pandas as pd

from interp.metrics import grok_steps
from interp.store import Run
from probes.llc import estimate


def calibration_steps(run: Run) -> dict[str, int]:
    """{"init": 0, "mid": the checkpoint nearest the middle of the transition, "end": the last}."""
    steps = run.steps
    g = grok_steps(run.metrics, run.train_config.grok_threshold)
    lo, hi = g["memorized_step"], g["grokked_step"]
    mid = (lo + hi) / 2 if lo is not None and hi is not None else steps[len(steps) // 2]
    return {"init": steps[0], "mid": min(steps, key=lambda s: abs(s - mid)), "end": steps[-1]}


def calibrate(run: Run, lrs: Sequence[float], gammas: Sequence[float], nbetas: Sequence[float] = (0.0,), *,
              draws: int = 200, chains: int = 2, batch: int = 256, seed: int = 0,
              steps: dict[str, int] | None = None, echo: bool = False) -> pd.DataFrame:
    """One row per (checkpoint, ε, γ, nβ); see the module docstring. ``echo``: print each row as
    Markdown when it is measured."""
    task = run.train_config.task()
    idx = task.train_idx
    rows = []
    for label, step in (steps or calibration_steps(run)).items():
        model = run.model_at(step).eval()
        for lr, gamma, nbeta in itertools.product(lrs, gammas, nbetas):
            s = {"llc_lr": lr, "llc_localization": gamma, "llc_nbeta": nbeta, "llc_draws": draws,
                 "llc_chains": chains, "llc_batch": batch, "llc_seed": seed}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = estimate(model, task.probe_inputs[idx], task.labels[idx], s)
            rows.append(row := {"checkpoint": label, "step": step, "lr": lr, "gamma": gamma, "nbeta": out["nbeta"],
                         "llc_mean": out["llc_mean"], "llc_std": out["llc_std"], "init_loss": out["init_loss"],
                         "rise": out["rise"], "drift": out["drift"], "converged": out["converged"],
                         "local": out["local"],
                         "seconds": out["seconds"]})
            if echo:
                print(markdown(pd.DataFrame([row])).splitlines()[-1], flush=True)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    head = "| checkpoint | step | ε (lr) | γ | nβ | LLC mean ± std | rise | drift | converged | local | s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in df.to_dict("records"):
        lines.append(f"| {r['checkpoint']} | {r['step']} | {r['lr']:g} | {r['gamma']:g} | {r['nbeta']:.1f} | "
                     f"{r['llc_mean']:.3g} ± {r['llc_std']:.2g} | {r['rise']:.3g} | {r['drift']:+.2f} | "
                     f"{'yes' if r['converged'] else 'no'} | {'yes' if r['local'] else 'no'} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m probes.llc_calibration", description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--lr", default="1e-5,1e-4,1e-3", help="step sizes ε")
    ap.add_argument("--gamma", default="10,100,1000", help="localisations γ")
    ap.add_argument("--nbeta", default="0", help="inverse temperatures nβ (0: devinterp's default)")
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--out", help="also write the table as CSV here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # an entry point: one thread, like the probe runner's workers
    print("\n".join(markdown(pd.DataFrame()).splitlines()[:2]), flush=True)
    df = calibrate(Run.open(args.run), _floats(args.lr), _floats(args.gamma), _floats(args.nbeta),
                   draws=args.draws, chains=args.chains, echo=True)
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
