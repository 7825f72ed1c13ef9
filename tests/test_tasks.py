import pytest
import torch

from interp.errors import ConfigError
from interp.tasks import OPERATIONS, Task


@pytest.mark.parametrize("op", OPERATIONS)
def test_labels_match_definition(op):
    p = 7
    t = Task(op, p, 0.5, 0)
    a, b = t.inputs[:, 0], t.inputs[:, 1]
    expected = {
        "add": (a + b) % p,
        "sub": (a - b) % p,
        "mul": (a * b) % p,
        "x2_plus_y2": (a * a + b * b) % p,
        "x2_xy_y2": (a * a + a * b + b * b) % p,
        "x3_xy": (a**3 + a * b) % p,
    }
    assert t.inputs.shape == (p * p, 3)
    assert (t.inputs[:, 2] == p).all(), "the = token id is p"
    if op in expected:
        assert torch.equal(t.labels, expected[op])
    elif op == "div":
        v = t.valid
        assert not v[b == 0].any() and v[b != 0].all()
        assert torch.equal((t.labels[v] * b[v]) % p, a[v] % p), "label * b == a for every valid cell"
    else:  # rand: a fixed table, same for every split seed, values in range
        assert torch.equal(t.labels, Task(op, p, 0.3, 5).labels)
        assert t.labels.min() >= 0 and t.labels.max() < p


def test_split_is_deterministic_and_disjoint():
    t1, t2, t3 = Task("add", 23, 0.3, 1), Task("add", 23, 0.3, 1), Task("add", 23, 0.3, 2)
    assert torch.equal(t1.train_idx, t2.train_idx)
    assert not torch.equal(t1.train_idx, t3.train_idx)
    assert len(t1.train_idx) == round(0.3 * 23 * 23)
    assert not (t1.train_mask & t1.test_mask).any()
    assert (t1.train_mask | t1.test_mask).all()


def test_split_does_not_touch_global_rng():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    Task("add", 31, 0.4, 3).train_idx  # noqa: B018
    assert torch.equal(torch.rand(1), before)


def test_div_split_excludes_undefined_cells():
    t = Task("div", 11, 1.0, 0)
    assert t.train_mask.sum() == 11 * 10 and not t.test_mask.any()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"op": "add", "p": 1}, "p"),
        ({"op": "div", "p": 12}, "p"),
        ({"op": "add", "p": 7, "frac_train": 0.0}, "frac_train"),
        ({"op": "add", "p": 7, "frac_train": 1.5}, "frac_train"),
        ({"op": "pow", "p": 7}, "op"),
    ],
)
def test_invalid_inputs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        Task(**kwargs)


# ---------------------------------------------------------------- issue 12: the paper's split scheme
def paper_split_reference(p: int, frac_train: float, seed: int) -> list[int]:
    """Nanda et al. 2023's gen_train_test, written out independently: the global ``random`` seeded,
    the row-major list of (i, j, p) triples shuffled, the first int(frac·p²) taken as train."""
    import random

    state = random.getstate()
    try:
        pairs = [(i, j, p) for i in range(p) for j in range(p)]
        random.seed(seed)
        random.shuffle(pairs)
        train = pairs[: int(frac_train * len(pairs))]
    finally:
        random.setstate(state)
    return sorted(i * p + j for i, j, _ in train)


@pytest.mark.parametrize(("p", "frac", "seed"), [(113, 0.3, 0), (113, 0.5, 0), (23, 0.37, 5), (7, 0.99, 3)])
def test_nanda2023_split_equals_reference(p, frac, seed):
    t = Task("add", p, frac, seed, split="nanda2023")
    assert t.train_idx.tolist() == paper_split_reference(p, frac, seed)
    assert len(t.train_idx) == int(frac * p * p)  # int, not round (0.37·529 = 195.73 -> 195)
    assert sorted(t.train_idx.tolist() + t.test_idx.tolist()) == list(range(p * p))


def test_nanda2023_split_leaves_global_random_alone_and_drops_invalid_cells():
    import random

    random.seed(123)
    before = random.random()
    random.seed(123)
    Task("add", 31, 0.3, 0, split="nanda2023").train_idx  # noqa: B018
    assert random.random() == before
    t = Task("div", 11, 0.5, 2, split="nanda2023")
    ref = [i for i in paper_split_reference(11, 0.5, 2) if i % 11 != 0]
    assert t.train_idx.tolist() == ref and not t.test_mask[t.valid.logical_not()].any()


def test_explicit_split_and_bad_schemes():
    t = Task("add", 5, 0.3, 0, split="explicit", train_cells=(7, 3, 24))
    assert t.train_idx.tolist() == [3, 7, 24] and len(t.test_idx) == 22
    with pytest.raises(ConfigError, match="needs its train indices"):
        Task("add", 5, 0.3, 0, split="explicit").train_idx  # noqa: B018
    with pytest.raises(ConfigError, match="distinct grid indices"):
        Task("add", 5, 0.3, 0, split="explicit", train_cells=(3, 3))
    with pytest.raises(ConfigError, match="unknown split scheme 'foo'"):
        Task("add", 5, 0.3, 0, split="foo")
    with pytest.raises(ConfigError, match="only with split='explicit'"):
        Task("add", 5, 0.3, 0, train_cells=(1,))


def test_nanda2023_preset_trains_and_records_its_split(tmp_path):
    """The paper's conventions: its split recorded in run.json and verified by Run.task, p + 1 output
    classes, and a warm-up whose first update has learning rate 0."""
    from interp import Run, StoreError, preset, train
    from interp.config import lr_at

    cfg = preset("nanda2023")
    assert (cfg.split, cfg.output_eq, cfg.warmup_from_zero) == ("nanda2023", True, True)
    assert cfg.model_config().d_vocab_out == 114 and preset("nanda").model_config().d_vocab_out == 113
    assert [lr_at(cfg, s) / cfg.lr for s in (0, 1, 5, 10, 11)] == [0.0, 0.1, 0.5, 1.0, 1.0]
    assert lr_at(preset("nanda"), 0) == pytest.approx(1e-4)  # grokscope's own warm-up is unchanged
    small = preset("tiny").replace(split="nanda2023", output_eq=True, warmup_from_zero=True, n_steps=4)
    run = train(small, tmp_path / "r", progress=False)
    split = run.meta["split"]
    assert split["scheme"] == "nanda2023" and split["train_idx"] == paper_split_reference(47, 0.4, 0)
    assert run.task.train_idx.tolist() == split["train_idx"]
    assert run.metrics["lr"].iloc[0] == 0.0
    assert run.model_at(4).cfg.d_vocab_out == 48
    run.update_meta(split={**split, "train_idx": split["train_idx"][1:]})
    with pytest.raises(StoreError, match="differs from the one its scheme"):
        Run.open(run.path).task  # noqa: B018
