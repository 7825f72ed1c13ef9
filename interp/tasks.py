"""Algorithmic tasks: binary operations a∘b mod p on Z_p.

Every example is the token sequence ``(a, b, =)`` with the ``=`` token id equal
to ``p`` (so ``d_vocab = p + 1``) and the label ``a∘b mod p`` (so
``d_vocab_out = p``). Examples are indexed on the full p×p grid by
``idx = a * p + b``; operations that are undefined on part of the grid (``div``
with b = 0) carry a ``valid`` mask, and the train/test split only ever draws
from valid cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from interp.errors import ConfigError

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

    def __post_init__(self) -> None:
        validate_task(self.op, self.p, self.frac_train)

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
        """Sorted grid indices of the training pairs: a seeded permutation of the valid
        cells, first ``round(frac_train * n_valid)`` of them (at least 1)."""
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
        return {"data_seed": self.data_seed, "frac_train": self.frac_train, "train_idx": self.train_idx.tolist()}
