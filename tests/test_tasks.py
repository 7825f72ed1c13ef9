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
