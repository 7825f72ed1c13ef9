"""``grokscope import``: turn a TransformerLens or Nanda et al. 2023 checkpoint file into a run.

    grokscope import FILE --format tl|nanda2023 --out DIR [--op add] [--p 113] [--frac-train 0.3]
                          [--data-seed 0] [--split nanda2023|grokscope] ...

Task, split, learning rate, weight decay and the loss curves come from the file where it holds them
(``probes.importers``); the options override it.
"""

from __future__ import annotations

import argparse
import warnings

from apps.cli.common import UsageError
from interp.tasks import OPERATIONS, SPLITS


def run(args: argparse.Namespace) -> int:
    from probes.importers import import_checkpoints

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = import_checkpoints(args.file, args.format, args.out, op=args.op, p=args.p,
                                        frac_train=args.frac_train, data_seed=args.data_seed, act_fn=args.act_fn,
                                        split=args.split)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            # a file of another layout than --format says: name the mismatch, no traceback
            what = (f"missing {e}" if isinstance(e, KeyError) else str(e).splitlines()[0] if str(e)
                    else type(e).__name__)
            raise UsageError(f"{args.file}: not a --format {args.format} checkpoint file ({what})") from None
    for w in caught:
        print(f"warning: {w.message}")
    s, cfg = result.summary(), result.train_config
    where = (f"steps {result.steps[0]}..{result.steps[-1]}" if result.steps else "loss curves only")
    acc = (f", train acc {s['train_acc']:.3f}, test acc {s['test_acc']:.3f}"
           if s.get("train_acc") == s.get("train_acc") and s.get("train_acc") is not None else "")
    print(f"{result.path}: imported {s['checkpoints']} checkpoint(s) ({where}){acc}; "
          f"{cfg.op} mod {cfg.p}, frac_train {cfg.frac_train:g}, split {cfg.split} (seed {cfg.data_seed}), "
          f"wd {cfg.weight_decay:g}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="turn a TransformerLens or Nanda et al. 2023 checkpoint file into a run",
                       description="Import foreign checkpoints (loaded with torch.load(weights_only=True)) "
                                   "as a grokscope run; the model config is inferred from the shapes, the "
                                   "task, split, optimiser settings and loss curves are read from the file.")
    p.add_argument("file", metavar="FILE", help=".pt/.pth file: a state dict, {'model': ...}, a list, "
                                                "{'checkpoints': [...], 'checkpoint_epochs': [...]}, and/or "
                                                "'config', 'optimizer', 'train_losses', 'test_losses'")
    p.add_argument("--format", required=True, choices=("tl", "nanda2023"), help="layout of the state dicts")
    p.add_argument("--out", required=True, metavar="DIR", help="new run directory")
    p.add_argument("--op", choices=OPERATIONS, help="the task's operation (default: the file's, else add)")
    p.add_argument("--p", type=int, help="modulus (default: inferred from the embedding, d_vocab - 1)")
    p.add_argument("--frac-train", type=float, help="train fraction (default: the file's, else 0.3)")
    p.add_argument("--data-seed", type=int, help="seed of the split (default: the file's seed, else 0)")
    p.add_argument("--split", choices=[s for s in SPLITS if s != "explicit"],
                   help="split scheme when the file holds no split (default: nanda2023 for that format, "
                        "else grokscope)")
    p.add_argument("--act-fn", choices=("relu", "gelu"), help="MLP activation (default: the file's, else relu)")
    p.set_defaults(func=run)
