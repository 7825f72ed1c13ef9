"""Algorithmic tasks: binary operations a∘b mod p on Z_p.

Every example is the token sequence ``(a, b, =)`` with the ``=`` token id equal
to ``p`` (so ``d_vocab = p + 1``) and the label ``a∘b mod p`` (so
``d_vocab_out = p``). Examples are indexed on the full p×p grid by
``idx = a * p + b``; operations that are undefined on part of the grid (``div``
with b = 0) carry a ``valid`` mask, and the train/test split only ever draws
from valid cells. (A model may also output p + 1 classes, the ``=`` token included, as the 2023
paper's code does: ``TrainConfig.output_eq``; labels stay in 0..p-1.)

Split schemes (``Task.split``):

``grokscope``  a ``torch.randperm`` permutation of the valid cells seeded by ``data_seed``; train is
               its first ``round(frac_train * n_valid)`` cells (at least 1).
``nanda2023``  the split of Nanda et al. 2023 (arXiv:2301.05217, ``gen_train_test``): the list of
               triples ``(i, j, p)`` in row-major order (i outer, j inner) shuffled by Python's
               ``random`` seeded with ``data_seed``; train is its first ``int(frac_train * p * p)``
               triples (``int``, not ``round``). Cells where the operation is undefined are then
               dropped from both sides.
``explicit``   the sorted grid indices given in ``train_cells`` (a run records them in run.json,
               with their SHA-256; :attr:`interp.store.Run.task` checks it).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from interp.errors import ConfigError

#: train/test split schemes (see the module docstring); issue 12
SPLITS = ("grokscope", "nanda2023", "explicit")
OPERATIONS = ("add", "sub", "mul", "div", "x2_plus_y2", "x2_xy_y2", "x3_xy", "rand")

#: seed of the fixed random table of the ``rand`` task (memorisation control)
RAND_TABLE_SEED = 20230117


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def _labels(op: str, p: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a∘b mod p for every pair, in int64 (a, b < p so no overflow for p < 2**20)."""
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "mul":
        return (a * b) % p
    if op == "div":  # a · b^(p-2) mod p (Fermat); b = 0 is masked out
        inv = np.array([pow(int(x), p - 2, p) for x in range(p)], dtype=np.int64)
        return (a * inv[b]) % p
    if op == "x2_plus_y2":
        return (a * a + b * b) % p
    if op == "x2_xy_y2":
        return (a * a + a * b + b * b) % p
    if op == "x3_xy":
        return (a * a % p * a + a * b) % p
    if op == "rand":
        rng = np.random.default_rng([RAND_TABLE_SEED, p])
        return rng.integers(0, p, size=(p, p))[a, b]
    raise ConfigError(f"op: unknown operation {op!r}; choose one of {', '.join(OPERATIONS)}")


def split_hash(train_idx: list[int]) -> str:
    """SHA-256 of a split's sorted train indices, as the decimal list ``"0,5,17"``."""
    return hashlib.sha256(",".join(str(int(i)) for i in sorted(train_idx)).encode()).hexdigest()


def nanda2023_train_cells(p: int, frac_train: float, seed: int) -> list[int]:
    """Grid indices ``i * p + j`` of the train triples of Nanda et al. 2023's split (module
    docstring), in shuffled order. Uses its own ``random.Random``: the global one is untouched."""
    cells = list(range(p * p))  # row-major (i, j): same order as the paper's list of triples
    random.Random(seed).shuffle(cells)
    return cells[: int(frac_train * p * p)]


def validate_task(op: str, p: int, frac_train: float) -> None:
    """Raise :class:`ConfigError` naming the field if (op, p, frac_train) is invalid."""
    if op not in OPERATIONS:
        raise ConfigError(f"op: unknown operation {op!r}; choose one of {', '.join(OPERATIONS)}")
    if not isinstance(p, int) or p < 2:
        raise ConfigError(f"p: must be an integer >= 2, got {p!r}")
    if op == "div" and not is_prime(p):
        raise ConfigError(f"p: must be prime for op 'div' (b has no inverse otherwise), got {p}")
    if not (0.0 < float(frac_train) <= 1.0):
        raise ConfigError(f"frac_train: must be in (0, 1], got {frac_train}")


@dataclass(frozen=True)
class Task:
    """The full dataset of one operation on Z_p and a seeded train/test split."""

    op: str
    p: int
    frac_train: float = 0.3
    data_seed: int = 0
    split: str = "grokscope"  # issue 12: one of SPLITS
    train_cells: tuple[int, ...] | None = None  # the ``explicit`` split's train indices

    def __post_init__(self) -> None:
        validate_task(self.op, self.p, self.frac_train)
        if self.split not in SPLITS:
            raise ConfigError(f"split: unknown split scheme {self.split!r}; choose one of {', '.join(SPLITS)}")
        if self.split == "explicit" and self.train_cells is not None:
            bad = [i for i in self.train_cells if not 0 <= int(i) < self.p * self.p]
            if bad or len(set(self.train_cells)) != len(self.train_cells):
                raise ConfigError(f"split: explicit train indices must be distinct grid indices in [0, {self.p ** 2})")
        elif self.train_cells is not None:
            raise ConfigError(f"split: train indices are given only with split='explicit', not {self.split!r}")

    @property
    def eq_token(self) -> int:
        return self.p

    @property
    def d_vocab(self) -> int:
        return self.p + 1

    @property
    def d_vocab_out(self) -> int:
        return self.p

    @cached_property
    def inputs(self) -> torch.Tensor:
        """[p*p, 3] int64 tokens (a, b, =) for every cell of the grid, row-major in a."""
        a, b = torch.meshgrid(torch.arange(self.p), torch.arange(self.p), indexing="ij")
        eq = torch.full_like(a, self.eq_token)
        return torch.stack([a, b, eq], dim=-1).reshape(-1, 3)

    @cached_property
    def labels(self) -> torch.Tensor:
        """[p*p] int64 labels a∘b mod p (0 where the operation is undefined)."""
        a = np.arange(self.p)[:, None].repeat(self.p, 1)
        b = np.arange(self.p)[None, :].repeat(self.p, 0)
        with np.errstate(all="ignore"):
            y = _labels(self.op, self.p, a.astype(np.int64), b.astype(np.int64))
        y = np.where(self.valid.numpy().reshape(self.p, self.p), y, 0)
        return torch.from_numpy(np.ascontiguousarray(y.reshape(-1))).long()

    @cached_property
    def valid(self) -> torch.Tensor:
        """[p*p] bool: cells where a∘b is defined (all but b = 0 for ``div``)."""
        v = torch.ones(self.p, self.p, dtype=torch.bool)
        if self.op == "div":
            v[:, 0] = False
        return v.reshape(-1)

    @cached_property
    def train_idx(self) -> torch.Tensor:
        """Sorted grid indices of the training pairs, by the task's split scheme (module
        docstring); ``grokscope``: a seeded permutation of the valid cells, first
        ``round(frac_train * n_valid)`` of them (at least 1)."""
        if self.split == "nanda2023":
            cells = torch.tensor(nanda2023_train_cells(self.p, self.frac_train, self.data_seed), dtype=torch.long)
            return torch.sort(cells[self.valid[cells]]).values
        if self.split == "explicit":
            if self.train_cells is None:
                raise ConfigError("split: an 'explicit' split needs its train indices (stored in run.json)")
            cells = torch.tensor(sorted(int(i) for i in self.train_cells), dtype=torch.long)
            return cells[self.valid[cells]]
        cells = torch.nonzero(self.valid).squeeze(1)
        gen = torch.Generator().manual_seed(int(self.data_seed))
        perm = cells[torch.randperm(len(cells), generator=gen)]
        n_train = max(1, round(self.frac_train * len(cells)))
        return torch.sort(perm[:n_train]).values

    @cached_property
    def train_mask(self) -> torch.Tensor:
        """[p*p] bool."""
        m = torch.zeros(self.p * self.p, dtype=torch.bool)
        m[self.train_idx] = True
        return m

    @cached_property
    def test_mask(self) -> torch.Tensor:
        """[p*p] bool: valid cells not in the training split."""
        return self.valid & ~self.train_mask

    @cached_property
    def test_idx(self) -> torch.Tensor:
        return torch.nonzero(self.test_mask).squeeze(1)

    # ---- the interface grid and sequence tasks share (issue 13; see interp.seqtasks)
    kind = "grid"
    per_position = False  # loss at the ``=`` position only
    modular = True
    bos_token = None

    @property
    def n_ctx(self) -> int:
        return 3

    @property
    def vocab(self) -> list[str]:
        """Token strings by id: 0..p−1, then ``=``."""
        return [str(i) for i in range(self.p)] + ["="]

    @property
    def special_tokens(self) -> dict[str, int]:
        return {"=": self.eq_token}

    @property
    def probe_inputs(self) -> torch.Tensor:
        """The inputs probes measure: the whole grid."""
        return self.inputs

    def query_types(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Query positions by type ([N, S] bool each; query 0 in none): one type, "all"."""
        choice = torch.ones_like(tokens, dtype=torch.bool)
        choice[:, 0] = False
        return {"all": choice}

    def split_meta(self) -> dict:
        """What run.json stores to check the split on reopening."""
        idx = self.train_idx.tolist()  # issue 12: the scheme and the indices' SHA-256 too
        return {"scheme": self.split, "data_seed": self.data_seed, "frac_train": self.frac_train, "train_idx": idx,
                "sha256": split_hash(idx)}
