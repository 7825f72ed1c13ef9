"""Sequence tasks: inputs ``[N, n_ctx]`` drawn from a seeded generator, beside the p×p grid tasks.

A grid task (:class:`interp.tasks.Task`) enumerates its inputs; a sequence task cannot, so it
draws a fixed train set of ``n_train`` distinct inputs and a disjoint test set of ``n_test``
more from a generator seeded by ``data_seed``. Everything that reproduces both is in the run's
config (task name, ``p``, ``seq_len``, ``seq_k``, ``n_triggers``, ``bos``, ``n_train``, ``n_test``,
``data_seed``) and run.json stores the SHA-256 of the data, checked when the run is opened.

Targets are ``[N, n_ctx]`` with :data:`IGNORE` where a position carries no loss: either the
last position only (``loss = "last"``: the ``=`` readout, with ``labels = targets[:, -1]`` and
the training fast path) or every position (``loss = "all"``: next-token prediction).

Tasks are registered in :data:`SEQ_TASKS` by name; each class's docstring says what it is and
where it comes from. The probe batch (:attr:`SequenceTask.probe_inputs`) is the first
:data:`PROBE_BATCH` test inputs: fixed by the config, so every checkpoint is measured on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from interp.errors import ConfigError

IGNORE = -100  # target of a position without loss (``F.nll_loss``'s ignore_index)
PROBE_BATCH = 128  # inputs in the fixed probe batch (the first test inputs)
_MAX_DRAWS = 50


class SeqSpec:
    """One sequence task's definition: vocabulary, context length and sampler."""

    loss = "last"  # "last": readout at the final position; "all": next-token loss everywhere
    modular = False  # the label is a residue mod p (Fourier structure over the operand tokens)

    def tokens(self, t: SequenceTask) -> list[str]:
        """Names of the ordinary tokens (ids 0..len-1); special tokens follow."""
        raise NotImplementedError

    def specials(self, t: SequenceTask) -> list[str]:
        return ["="]

    def length(self, t: SequenceTask) -> int:
        """Positions of one input, BOS excluded."""
        return t.seq_len + 1

    def d_vocab_out(self, t: SequenceTask) -> int:
        return t.p

    def sample(self, t: SequenceTask, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` inputs [count, length] (BOS excluded) and their targets, same shape."""
        raise NotImplementedError

    def check(self, t: SequenceTask) -> None:
        pass


SEQ_TASKS: dict[str, SeqSpec] = {}


def register(name: str):
    def wrap(cls: type[SeqSpec]) -> type[SeqSpec]:
        SEQ_TASKS[name] = cls()
        return cls
    return wrap


def _last_target(labels: np.ndarray, length: int) -> np.ndarray:
    targets = np.full((len(labels), length), IGNORE, dtype=np.int64)
    targets[:, -1] = labels
    return targets


@register("sum")
class Sum(SeqSpec):
    """``sum``: a₁ + … + a_k mod p over k = ``seq_k`` operands, read at a final ``=``
    (the control case: the answer needs every operand, so readout attention should stay spread).
    The k-operand generalisation of the modular addition of Power et al. 2022 ("Grokking",
    arXiv:2201.02177). Tokens: 0..p−1, ``=``. Input: a₁ … a_k ``=``."""

    modular = True

    def tokens(self, t):
        return [str(i) for i in range(t.p)]

    def length(self, t):
        return t.seq_k + 1

    def check(self, t):
        if not 2 <= t.seq_k <= 16:
            raise ConfigError(f"seq_k: sum needs 2..16 operands, got {t.seq_k}")

    def sample(self, t, rng, count):
        a = rng.integers(0, t.p, size=(count, t.seq_k))
        x = np.concatenate([a, np.full((count, 1), t.p)], axis=1)
        return x, _last_target(a.sum(1) % t.p, x.shape[1])


@register("sparse_sum")
class SparseSum(SeqSpec):
    """``sparse_sum``: a + b mod p, where a and b sit at two random positions among ``seq_len`` − 2
    distractor tokens drawn from their own vocabulary (d0..d{p−1}), read at a final ``=``. The
    answer needs 2 keys out of ``seq_len``, so the readout attention must become sparse (the
    sparse-token-selection setting of Tian et al. 2023, "Scan and Snap", arXiv:2305.16380, on the
    modular addition of Power et al. 2022, arXiv:2201.02177). Tokens: 0..p−1, d0..d{p−1}, ``=``."""

    modular = True

    def tokens(self, t):
        return [str(i) for i in range(t.p)] + [f"d{i}" for i in range(t.p)]

    def check(self, t):
        if t.seq_len < 2:
            raise ConfigError(f"seq_len: sparse_sum needs at least 2 positions, got {t.seq_len}")

    def sample(self, t, rng, count):
        n = t.seq_len
        x = rng.integers(t.p, 2 * t.p, size=(count, n + 1))
        x[:, -1] = 2 * t.p
        pos = np.argsort(rng.random((count, n)), axis=1)[:, :2]  # two distinct positions
        ab = rng.integers(0, t.p, size=(count, 2))
        np.put_along_axis(x, pos, ab, axis=1)
        return x, _last_target(ab.sum(1) % t.p, n + 1)


@register("sparse_parity")
class SparseParity(SeqSpec):
    """``sparse_parity``: the parity of k = ``seq_k`` fixed secret positions of ``seq_len`` random bits,
    read at a final ``=`` (Barak et al. 2022, "Hidden Progress in Deep Learning: SGD Learns
    Parities Near the Computational Limit", arXiv:2207.08799): long plateaus, then a sudden jump.
    The secret positions are drawn from ``data_seed`` (:meth:`secret`). Tokens: 0, 1, ``=``."""

    def tokens(self, t):
        return ["0", "1"]

    def d_vocab_out(self, t):
        return 2

    def check(self, t):
        if not 1 <= t.seq_k <= t.seq_len:
            raise ConfigError(f"seq_k: sparse_parity needs 1 <= seq_k <= seq_len, got {t.seq_k}")

    @staticmethod
    def secret(t) -> np.ndarray:
        return np.sort(np.random.default_rng([t.data_seed, 1]).choice(t.seq_len, t.seq_k, replace=False))

    def sample(self, t, rng, count):
        bits = rng.integers(0, 2, size=(count, t.seq_len))
        x = np.concatenate([bits, np.full((count, 1), 2)], axis=1)
        return x, _last_target(bits[:, self.secret(t)].sum(1) % 2, x.shape[1])


@register("bigram_backcopy")
class BigramBackcopy(SeqSpec):
    """``bigram_backcopy``: the Bigram-Backcopy task of Guo et al. 2024 ("Active-Dormant Attention
    Heads: Mechanistically Demystifying Extreme-Token Phenomena in LLMs", arXiv:2410.13835). A BOS
    token, then ``seq_len`` tokens of a Markov chain over p tokens, except that right after each of
    the ``n_triggers`` trigger tokens (ids 0..n_triggers−1, named T0, T1, ...) the next token copies
    the token before the trigger. Next-token loss at every position. Here the bigram transition
    matrix is a seeded random one (rows Dirichlet(0.5), seed ``data_seed``: :meth:`transitions`) and
    the first token is uniform over the non-trigger tokens. The paper reports, in 1-3 layer
    transformers trained on it, an attention sink on BOS (heads dormant on non-trigger queries,
    attending to BOS, and active on triggers), a value-state drain and a residual-state peak at BOS."""

    loss = "all"

    def tokens(self, t):
        return [f"T{i}" if i < t.n_triggers else str(i) for i in range(t.p)]

    def specials(self, t):
        return []  # BOS is always on

    def length(self, t):
        return t.seq_len

    def check(self, t):
        if not t.bos:
            raise ConfigError("bos: bigram_backcopy always starts with BOS; set bos=true")
        if not 1 <= t.n_triggers < t.p:
            raise ConfigError(f"n_triggers: need 1 <= n_triggers < p, got {t.n_triggers}")

    @staticmethod
    def transitions(t) -> np.ndarray:
        return np.random.default_rng([t.data_seed, 2]).dirichlet(np.full(t.p, 0.5), size=t.p)

    def sample(self, t, rng, count):
        cdf = np.cumsum(self.transitions(t), axis=1)
        seq = np.empty((count, t.seq_len + 1), dtype=np.int64)  # ordinary tokens x_1..x_{n+1}
        seq[:, 0] = rng.integers(t.n_triggers, t.p, size=count)
        for i in range(1, t.seq_len + 1):
            u = rng.random(count)
            nxt = np.minimum((u[:, None] > cdf[seq[:, i - 1]]).sum(1), t.p - 1)
            if i >= 2:
                nxt = np.where(seq[:, i - 1] < t.n_triggers, seq[:, i - 2], nxt)
            seq[:, i] = nxt
        # inputs x_1..x_n (BOS is prepended by SequenceTask), targets x_1..x_{n+1}: position j predicts j+1
        return seq[:, : t.seq_len], seq


@dataclass(frozen=True)
class SequenceTask:
    """A sequence task with a fixed train set and a disjoint test set (module docstring)."""

    name: str
    p: int = 17
    seq_len: int = 16
    seq_k: int = 2
    n_triggers: int = 3
    bos: bool = False
    n_train: int = 2000
    n_test: int = 1000
    data_seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in SEQ_TASKS:
            raise ConfigError(f"seq_task: unknown sequence task {self.name!r}; choose one of {', '.join(SEQ_TASKS)}")
        for field, lo in (("p", 2), ("seq_len", 1), ("n_train", 1), ("n_test", 0)):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < lo:
                raise ConfigError(f"{field}: must be an integer >= {lo}, got {getattr(self, field)!r}")
        self.spec.check(self)

    # ---- vocabulary
    @property
    def spec(self) -> SeqSpec:
        return SEQ_TASKS[self.name]

    @property
    def kind(self) -> str:
        return self.name

    @property
    def per_position(self) -> bool:
        """True when every position carries next-token loss (no last-position fast path)."""
        return self.spec.loss == "all"

    @property
    def modular(self) -> bool:
        return self.spec.modular

    @cached_property
    def vocab(self) -> list[str]:
        """Token strings by id: ordinary tokens, then ``=`` (if any), then ``<bos>`` (if on)."""
        return self.spec.tokens(self) + self.spec.specials(self) + (["<bos>"] if self.bos else [])

    @property
    def special_tokens(self) -> dict[str, int]:
        """Named special tokens: ``{"=": id, "<bos>": id}`` (those the task has)."""
        return {s: self.vocab.index(s) for s in ("=", "<bos>") if s in self.vocab}

    @property
    def bos_token(self) -> int | None:
        return self.special_tokens.get("<bos>")

    @property
    def eq_token(self) -> int | None:
        return self.special_tokens.get("=")

    @property
    def d_vocab(self) -> int:
        return len(self.vocab)

    @property
    def d_vocab_out(self) -> int:
        return self.spec.d_vocab_out(self)

    @property
    def n_ctx(self) -> int:
        return self.spec.length(self) + int(self.bos)

    # ---- data
    @cached_property
    def _data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct inputs: the first n_train are the train set, the next n_test the test set."""
        rng, need = np.random.default_rng([self.data_seed, 0]), self.n_train + self.n_test
        xs, ys, seen = [], [], 0
        for _ in range(_MAX_DRAWS):
            x, y = self.spec.sample(self, rng, max(2 * (need - seen), 64))
            xs.append(x)
            ys.append(y)
            allx = np.concatenate(xs)
            _, first = np.unique(allx, axis=0, return_index=True)
            seen = len(first)
            if seen >= need:
                keep = np.sort(first)[:need]
                x, y = allx[keep], np.concatenate(ys)[keep]
                break
        else:
            raise ConfigError(f"n_train: {self.name} gave only {seen} distinct inputs, fewer than "
                              f"n_train + n_test = {need}; lower them or enlarge the task")
        if self.bos:
            x = np.concatenate([np.full((need, 1), self.bos_token), x], axis=1)
            if not self.per_position:
                y = np.concatenate([np.full((need, 1), IGNORE), y], axis=1)
        return torch.from_numpy(np.ascontiguousarray(x)).long(), torch.from_numpy(np.ascontiguousarray(y)).long()

    @property
    def inputs(self) -> torch.Tensor:
        """[n_train + n_test, n_ctx] int64 tokens."""
        return self._data[0]

    @property
    def targets(self) -> torch.Tensor:
        """[n_train + n_test, n_ctx] int64 targets, :data:`IGNORE` where a position carries no loss."""
        return self._data[1]

    @property
    def loss_mask(self) -> torch.Tensor:
        """[n_train + n_test, n_ctx] bool: positions that carry loss."""
        return self.targets != IGNORE

    @property
    def labels(self) -> torch.Tensor:
        """[N] last-position labels (what the ``=`` readout predicts)."""
        return self.targets[:, -1]

    @cached_property
    def valid(self) -> torch.Tensor:
        return torch.ones(self.n_train + self.n_test, dtype=torch.bool)

    @cached_property
    def train_idx(self) -> torch.Tensor:
        return torch.arange(self.n_train)

    @cached_property
    def test_idx(self) -> torch.Tensor:
        return torch.arange(self.n_train, self.n_train + self.n_test)

    @cached_property
    def train_mask(self) -> torch.Tensor:
        return torch.arange(self.n_train + self.n_test) < self.n_train

    @cached_property
    def test_mask(self) -> torch.Tensor:
        return ~self.train_mask

    @cached_property
    def probe_inputs(self) -> torch.Tensor:
        """[min(PROBE_BATCH, n_test or n_train), n_ctx]: the fixed probe batch (first test inputs)."""
        idx = self.test_idx if self.n_test else self.train_idx
        return self.inputs[idx[:PROBE_BATCH]]

    def query_types(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Query positions by type, each a [N, S] bool mask over ``tokens`` [N, S]; query 0 (which can
        only see itself) is in none. ``bigram_backcopy``: "trigger" and "non_trigger" (the
        active-dormant split of Guo et al. 2024); other tasks: "all"."""
        choice = torch.ones_like(tokens, dtype=torch.bool)
        choice[:, 0] = False
        if self.name != "bigram_backcopy":
            return {"all": choice}
        trig = tokens < self.n_triggers
        return {"trigger": trig & choice, "non_trigger": ~trig & choice}

    def data_sha256(self) -> str:
        h = hashlib.sha256(self.inputs.numpy().tobytes())
        h.update(self.targets.numpy().tobytes())
        return h.hexdigest()

    def split_meta(self) -> dict:
        """What run.json stores to check the data on reopening."""
        return {"data_seed": self.data_seed, "n_train": self.n_train, "n_test": self.n_test,
                "data_sha256": self.data_sha256()}
