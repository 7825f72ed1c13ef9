import torch
import torch.nn.functional as F

from interp.numerics import flush_subnormal_, normal_grad, subnormal_share, tiny

TINY32 = tiny(torch.float32)


def _confident_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with a margin of ~100: wrong-class probabilities fall below float32's normal range."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 23, generator=g) * 3
    y = torch.randint(23, (64,), generator=g)
    logits[torch.arange(64), y] += 100.0
    return logits, y


def test_plain_float64_loss_makes_subnormal_float32_gradients():
    logits, y = _confident_logits()
    x = logits.clone().requires_grad_()
    F.cross_entropy(x.double(), y).backward()
    assert subnormal_share([x.grad]) > 0.05  # the problem this module exists for


def test_normal_grad_removes_them_and_changes_nothing_else():
    logits, y = _confident_logits()
    plain, clean = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss_plain = F.cross_entropy(plain.double(), y)
    loss_clean = F.cross_entropy(normal_grad(clean.double()), y)
    loss_plain.backward()
    loss_clean.backward()
    assert torch.equal(loss_plain, loss_clean)
    assert subnormal_share([clean.grad]) == 0.0
    kept = plain.grad.abs() >= TINY32
    assert torch.equal(clean.grad[kept], plain.grad[kept])
    assert torch.all(clean.grad[~kept] == 0)


def test_normal_grad_in_float32_loss():
    logits, y = _confident_logits()
    x = logits.clone().requires_grad_()
    F.cross_entropy(normal_grad(x), y).backward()
    assert subnormal_share([x.grad]) == 0.0


def test_flush_subnormal_in_place():
    t = torch.tensor([1.0, TINY32, TINY32 / 4, -TINY32 / 8, 0.0, -2.0])
    flush_subnormal_([t, torch.arange(3)])  # integer tensors are left alone
    assert t.tolist() == [1.0, TINY32, 0.0, 0.0, 0.0, -2.0]
    assert subnormal_share([torch.tensor([TINY32 / 2, 1.0, 0.0, 3.0])]) == 0.25


def _one_step(cfg, sd, x, y, size: float = 1e-2):
    """Loss before and after one normalised gradient-descent step (θ −= size · g/‖g‖) of the trainer's
    loss from weights ``sd``; the gradients."""
    from interp.losses import cross_entropy

    model = cfg.build_model()
    model.load_state_dict({k: v.to(model.W_E.dtype) for k, v in sd.items()})
    loss = cross_entropy(model.forward_last(x), y, cfg)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= (size / norm).to(p.dtype) * g
    with torch.no_grad():
        after = cross_entropy(model.forward_last(x), y, cfg)
    return loss.item(), after.item(), grads


def test_confident_checkpoint_trains_without_subnormals_like_float64(tiny_run):
    """Issue 17: scale a grokked model's unembedding until its loss gradient would be subnormal; one
    training step has no subnormal gradient and lowers the loss as a float64 model does."""
    cfg, task = tiny_run.train_config, tiny_run.task
    sd = tiny_run.state_dict_at(tiny_run.steps[-1])
    sd["unembed.W_U"] = sd["unembed.W_U"] * 1.5  # loss ~4e-10, ~19% of dlogits subnormal
    x, y = task.inputs[task.train_idx], task.labels[task.train_idx]
    model = cfg.build_model()
    model.load_state_dict(sd)
    logits = model.forward_last(x).detach().requires_grad_()
    F.cross_entropy(logits.double(), y).backward()
    assert subnormal_share([logits.grad]) > 0.01  # the case the fix is for
    before, after, grads = _one_step(cfg, sd, x, y)
    ref_before, ref_after, _ = _one_step(cfg.replace(dtype="float64"), sd, x, y)
    assert subnormal_share(grads) == 0.0
    assert after < before
    assert abs((before - after) - (ref_before - ref_after)) <= 1e-2 * abs(ref_before - ref_after)
