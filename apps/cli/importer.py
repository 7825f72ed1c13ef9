"""``grokscope import``: turn a TransformerLens or Nanda et al. 2023 checkpoint file into a run.

    grokscope import FILE --format tl|nanda2023 --out DIR [--op add] [--p 113] [--frac-train 0.3] ...
"""

from __future__ import annotations

import argparse

from apps.cli.common import UsageError
from interp.tasks import OPERATIONS


def run(args: argparse.Namespace) -> int:
    from probes.importers import import_checkpoints

    try:
        result = import_checkpoints(args.file, args.format, args.out, op=args.op, p=args.p,
                                    frac_train=args.frac_train, data_seed=args.data_seed, act_fn=args.act_fn)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        # a file of another layout than --format says: name the mismatch, no traceback
        what = f"missing {e}" if isinstance(e, KeyError) else str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{args.file}: not a --format {args.format} checkpoint file ({what})") from None
    s = result.summary()
    print(f"{result.path}: imported {s['checkpoints']} checkpoint(s) (steps {result.steps[0]}..{result.steps[-1]}), "
          f"train acc {s['train_acc']:.3f}, test acc {s['test_acc']:.3f} on grokscope's split")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="turn a TransformerLens or Nanda et al. 2023 checkpoint file into a run",
                       description="Import foreign checkpoints (loaded with torch.load(weights_only=True)) "
                                   "as a grokscope run; the model config is inferred from the shapes.")
    p.add_argument("file", metavar="FILE", help=".pt/.pth file: a state dict, {'model': ...}, a list, "
                                                "or {'checkpoints': [...], 'checkpoint_epochs': [...]}")
    p.add_argument("--format", required=True, choices=("tl", "nanda2023"), help="layout of the state dicts")
    p.add_argument("--out", required=True, metavar="DIR", help="new run directory")
    p.add_argument("--op", default="add", choices=OPERATIONS, help="the task's operation (default add)")
    p.add_argument("--p", type=int, help="modulus (default: inferred from the embedding, d_vocab - 1)")
    p.add_argument("--frac-train", type=float, default=0.3, help="train fraction of grokscope's split (0.3)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of grokscope's split (0)")
    p.add_argument("--act-fn", default="relu", choices=("relu", "gelu"), help="MLP activation (default relu)")
    p.set_defaults(func=run)
