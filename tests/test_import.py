"""probes.importers and ``grokscope import``: TransformerLens and Nanda et al. 2023 layouts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from apps.cli.main import main as cli_main
from interp.errors import ConfigError, StoreError
from interp.store import Run
from probes.importers import from_nanda2023, import_checkpoints, read_checkpoints


def to_nanda2023(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A one-layer grokscope state dict in the progress-measures code's layout (with its mask buffer
    and the extra ``=`` column of W_U), written out by hand from that code's shapes."""
    h, d, _ = sd["blocks.0.attn.W_Q"].shape
    out = {
        "embed.W_E": sd["embed.W_E"].T,  # [d, p+1]
        "pos_embed.W_pos": sd["pos_embed.W_pos"],
        "blocks.0.attn.W_O": torch.cat([sd["blocks.0.attn.W_O"][i].T for i in range(h)], dim=1),  # [d, h·e]
        "blocks.0.attn.mask": torch.tril(torch.ones(3, 3)),
        "blocks.0.mlp.W_in": sd["blocks.0.mlp.W_in"].T,  # [m, d]
        "blocks.0.mlp.b_in": sd["blocks.0.mlp.b_in"],
        "blocks.0.mlp.W_out": sd["blocks.0.mlp.W_out"].T,  # [d, m]
        "blocks.0.mlp.b_out": sd["blocks.0.mlp.b_out"],
        "unembed.W_U": torch.cat([sd["unembed.W_U"], eq_column(d)], dim=1),  # [d, p+1]
    }
    for name in ("W_Q", "W_K", "W_V"):
        out[f"blocks.0.attn.{name}"] = sd[f"blocks.0.attn.{name}"].transpose(1, 2)  # [h, e, d]
    return {k: v.clone().contiguous() for k, v in out.items()}


def eq_column(d: int) -> torch.Tensor:
    """A fixed, small '=' output column (the paper's W_U has one; a grokscope model has none)."""
    return 0.1 * torch.randn(d, 1, generator=torch.Generator().manual_seed(1))


def to_tl(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights as a TransformerLens HookedTransformer state dict: zero attention and
    unembedding biases (the TL grokking demo freezes them) and TL's attention buffers."""
    h, _, e = sd["blocks.0.attn.W_Q"].shape
    d, p = sd["unembed.W_U"].shape
    out = dict(sd)
    out.update({f"blocks.0.attn.b_{n}": torch.zeros(h, e) for n in "QKV"})
    out["blocks.0.attn.b_O"] = torch.zeros(d)
    out["blocks.0.attn.mask"] = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    out["blocks.0.attn.IGNORE"] = torch.tensor(-1e5)
    out["unembed.b_U"] = torch.zeros(p)
    return out


def _logits(run: Run, step: int) -> torch.Tensor:
    """The answer-class logits [p², p] (an '=' output column dropped)."""
    with torch.no_grad():
        return run.model_at(step)(run.task.inputs)[:, -1, : run.train_config.p]


@pytest.fixture
def source(tiny_run):
    """Two checkpoints of the grokked tiny run: (steps, state dicts, expected logits)."""
    steps = [tiny_run.steps[10], tiny_run.steps[-1]]
    return steps, [tiny_run.state_dict_at(s) for s in steps], [_logits(tiny_run, s) for s in steps]


def test_nanda2023_round_trip(source, tmp_path, tiny_run):
    steps, sds, want = source
    path = tmp_path / "full_run_data.pth"
    torch.save({"checkpoints": [to_nanda2023(sd) for sd in sds], "checkpoint_epochs": steps,
                "train_losses": [1.0, 0.5]}, path)
    # the tiny run was trained on grokscope's split: say so (the format's default is the paper's split)
    run = import_checkpoints(path, "nanda2023", tmp_path / "imported", frac_train=0.4, split="grokscope")
    assert run.steps == steps and run.status == "imported" and run.train_config.output_eq
    for step, logits in zip(steps, want):
        torch.testing.assert_close(_logits(run, step), logits, rtol=1e-5, atol=1e-5)
    cfg, orig = run.train_config, tiny_run.train_config
    for field in ("p", "d_model", "n_heads", "d_head", "d_mlp", "n_layers", "mlp_bias", "attn_bias", "layernorm"):
        assert getattr(cfg, field) == getattr(orig, field), field
    summary = run.summary()  # metrics were evaluated at each imported checkpoint, on the same split
    assert summary["test_acc"] == pytest.approx(tiny_run.summary()["test_acc"])
    assert run.meta["imported"]["format"] == "nanda2023"


def test_nanda2023_attention_output_layout():
    """W_O [d, h·e] is head-major: column head·e + i holds W_O[head, i, :]."""
    h, d, e, m, v = 2, 4, 3, 5, 8
    sd = {"embed.W_E": torch.randn(d, v), "pos_embed.W_pos": torch.randn(3, d), "unembed.W_U": torch.randn(d, v),
          "blocks.0.attn.W_O": torch.arange(d * h * e, dtype=torch.float32).view(d, h * e),
          "blocks.0.mlp.W_in": torch.randn(m, d), "blocks.0.mlp.W_out": torch.randn(d, m)}
    sd.update({f"blocks.0.attn.W_{n}": torch.randn(h, e, d) for n in "QKV"})
    out = from_nanda2023(sd, p=v - 1)
    assert out["blocks.0.attn.W_O"].shape == (h, e, d)
    assert out["blocks.0.attn.W_O"][1, 2, 3].item() == sd["blocks.0.attn.W_O"][3, 1 * e + 2].item()
    assert out["embed.W_E"].shape == (v, d) and out["unembed.W_U"].shape == (d, v)  # '=' column kept
    assert torch.equal(out["blocks.0.attn.W_Q"][1], sd["blocks.0.attn.W_Q"][1].T)


def test_tl_round_trip_single_and_model_dict(source, tmp_path):
    _, sds, want = source
    torch.save(to_tl(sds[1]), tmp_path / "tl.pt")
    run = import_checkpoints(tmp_path / "tl.pt", "tl", tmp_path / "a", frac_train=0.4)
    assert run.steps == [0] and not run.train_config.attn_bias and not run.train_config.unembed_bias
    torch.testing.assert_close(_logits(run, 0), want[1], rtol=1e-5, atol=1e-5)
    torch.save({"model": to_tl(sds[0]), "epoch": 123}, tmp_path / "tl_model.pt")
    run = import_checkpoints(tmp_path / "tl_model.pt", "tl", tmp_path / "b", frac_train=0.4)
    assert run.steps == [123]
    torch.testing.assert_close(_logits(run, 123), want[0], rtol=1e-5, atol=1e-5)


def test_list_of_state_dicts(source, tmp_path):
    _, sds, _ = source
    torch.save([sds[0], sds[1]], tmp_path / "list.pt")
    assert [s for s, _ in read_checkpoints(tmp_path / "list.pt")] == [0, 1]


@dataclass
class NotATensor:
    x: int = 1


def test_import_errors(source, tmp_path):
    _, sds, _ = source
    torch.save({"model": NotATensor()}, tmp_path / "pickled.pt")
    with pytest.raises(StoreError, match="weights_only"):
        read_checkpoints(tmp_path / "pickled.pt")
    torch.save({"step": 3}, tmp_path / "empty.pt")
    with pytest.raises(StoreError, match="found no state dict"):
        read_checkpoints(tmp_path / "empty.pt")
    torch.save(to_nanda2023(sds[0]), tmp_path / "n.pt")
    with pytest.raises(ConfigError, match=r"p: embed\.W_E holds 48 tokens, so p = 47, not 53"):
        import_checkpoints(tmp_path / "n.pt", "nanda2023", tmp_path / "x", p=53)
    with pytest.raises(ConfigError, match="format: unknown format 'keras'"):
        import_checkpoints(tmp_path / "n.pt", "keras", tmp_path / "x")
    bad = {**to_nanda2023(sds[0]), "blocks.0.ln.w": torch.ones(3)}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"unexpected key 'blocks\.0\.ln\.w'"):
        import_checkpoints(tmp_path / "bad.pt", "nanda2023", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_import(source, tmp_path, capsys):
    _, sds, want = source
    torch.save(to_nanda2023(sds[1]), tmp_path / "n.pt")
    args = ["import", str(tmp_path / "n.pt"), "--format", "nanda2023", "--out", str(tmp_path / "run"),
            "--frac-train", "0.4"]
    assert cli_main(args) == 0
    assert "imported 1 checkpoint(s)" in capsys.readouterr().out
    torch.testing.assert_close(_logits(Run.open(tmp_path / "run"), 0), want[1], rtol=1e-5, atol=1e-5)
    assert cli_main(args) == 2  # the run exists now
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err


# ---------------------------------------------------------------- issue 12: the paper's own files
P, FRAC, SEED = 47, 0.3, 3  # the tiny run's modulus; the file's own split fraction and seed


def paper_train_cells(p: int, frac: float, seed: int) -> list[int]:
    """The paper's split, written out independently (global ``random``, state restored)."""
    import random

    state = random.getstate()
    try:
        pairs = [(i, j, p) for i in range(p) for j in range(p)]
        random.seed(seed)
        random.shuffle(pairs)
        return sorted(i * p + j for i, j, _ in pairs[: int(frac * len(pairs))])
    finally:
        random.setstate(state)


def paper_forward(sd: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """Last-position logits [n, p+1] of a one-layer model in the paper's layout, computed directly
    from that layout (float64): embed, causal attention, ReLU MLP, unembed."""
    sd = {k: v.double() for k, v in sd.items()}
    x = sd["embed.W_E"].T[tokens] + sd["pos_embed.W_pos"]  # [n, s, d]
    h, e, _ = sd["blocks.0.attn.W_Q"].shape
    q, k, v = (torch.einsum("hed,nsd->nhse", sd[f"blocks.0.attn.W_{m}"], x) for m in "QKV")
    scores = torch.einsum("nhqe,nhke->nhqk", q, k) / e**0.5
    causal = torch.ones(3, 3, dtype=torch.bool).tril()
    pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    z = torch.einsum("nhqk,nhke->nqhe", pattern, v).reshape(len(tokens), 3, h * e)
    x = x + z @ sd["blocks.0.attn.W_O"].T
    post = torch.relu(x @ sd["blocks.0.mlp.W_in"].T + sd["blocks.0.mlp.b_in"])
    x = x + post @ sd["blocks.0.mlp.W_out"].T + sd["blocks.0.mlp.b_out"]
    return (x @ sd["unembed.W_U"])[:, -1]


def reference_progress(logits: torch.Tensor, labels: torch.Tensor, train: list[int], keys: list[int]) -> dict:
    """Train loss (p+1 classes), train loss on the p answer classes, excluded loss per key frequency
    and restricted loss (Nanda et al. 2023 §5.1, logits convention), computed directly in float64."""
    import torch.nn.functional as F

    p = int(len(labels) ** 0.5)
    L = logits[:, :p].double()
    a = torch.arange(p, dtype=torch.float64)
    ab = (a[:, None] + a[None, :]).reshape(-1)

    def key_part(k: int) -> torch.Tensor:  # projection of every class column on cos/sin(w_k (a+b))
        out = torch.zeros_like(L)
        for f in (torch.cos, torch.sin):
            u = f(2 * torch.pi * k * ab / p)
            u = u / u.norm()
            out += u[:, None] * (u @ L)[None, :]
        return out

    y, tr = labels[train], torch.tensor(train)
    parts = {k: key_part(k) for k in keys}
    key_sum = sum(parts.values())
    restricted = key_sum + (L - key_sum).mean(0)
    return {"train_loss": F.cross_entropy(logits[tr].double(), y).item(),
            "train_loss_answers": F.cross_entropy(L[tr], y).item(),
            "excluded": {k: F.cross_entropy((L - parts[k])[tr], y).item() for k in keys},
            "restricted": F.cross_entropy(restricted[tr], y).item()}


def paper_file(sd: dict[str, torch.Tensor], **extra) -> dict:
    """The paper's ``final.pth``: the model in its layout, its Config as a dict, the optimizer state
    and per-epoch loss curves."""
    paper_sd = to_nanda2023(sd)
    model = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(v.clone())
                                    for k, v in paper_sd.items() if k != "blocks.0.attn.mask"})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    config = {"lr": 1e-3, "weight_decay": 1.0, "p": P, "d_model": 64, "fn_name": "add", "frac_train": FRAC,
              "num_epochs": 1500, "save_models": False, "save_every": 100, "stopping_thresh": -1, "seed": SEED,
              "num_layers": 1, "batch_style": "full", "d_vocab": P + 1, "n_ctx": 3, "d_mlp": 128,
              "num_heads": 4, "act_type": "ReLU", "use_ln": False, "take_metrics_every_n_epochs": 1000}
    curve = torch.logspace(0.6, -6, 1500)
    return {"model": paper_sd, "train_loss": float(curve[-1]), "test_loss": float(curve[-1]),
            "train_losses": curve.tolist(), "test_losses": (curve * 2).tolist(), "epoch": 1500,
            "optimizer": opt.state_dict(), "config": config, **extra}


def test_paper_final_checkpoint_keeps_its_split_and_matches_an_independent_computation(source, tmp_path):
    import probes

    _, sds, _ = source
    file = paper_file(sds[1])
    torch.save(file, tmp_path / "final.pth")
    run = import_checkpoints(tmp_path / "final.pth", "nanda2023", tmp_path / "run")  # everything from the file
    cfg, train = run.train_config, paper_train_cells(P, FRAC, SEED)
    assert (cfg.p, cfg.op, cfg.frac_train, cfg.data_seed, cfg.weight_decay, cfg.lr, cfg.n_steps) == \
        (P, "add", FRAC, SEED, 1.0, 1e-3, 1500)
    assert cfg.split == "nanda2023" and cfg.output_eq and cfg.warmup_from_zero
    assert run.meta["split"]["scheme"] == "nanda2023" and run.task.train_idx.tolist() == train
    assert run.steps == [1500]
    # metrics: the file's curves (epochs 0..1499) and the evaluated final checkpoint
    m = run.metrics
    assert len(m) == 1501 and m["test_loss"].iloc[:1500].tolist() == pytest.approx(file["test_losses"])
    assert m["lr"].iloc[0] == 0.0 and m["lr"].iloc[10] == pytest.approx(1e-3)

    probes.run(run, ["progress.loss", "progress.restricted"], progress=False)
    _, arrays = probes.load_arrays(run, "progress.restricted")
    per_freq = arrays["logit.excluded_loss_per_freq"][-1]
    keys = [k for k in range(len(per_freq)) if per_freq[k] == per_freq[k]]
    assert keys  # the grokked model has key frequencies
    task = run.task
    ref = reference_progress(paper_forward(file["model"], task.inputs), task.labels, train, keys)
    scalars = probes.load(run).set_index(["probe", "name"])["value"]
    got = {"train_loss": float(run.checkpoint_metadata(1500)["train_loss"]),
           "train_loss_answers": scalars[("progress.loss", "train_loss")],
           "excluded": {k: float(per_freq[k]) for k in keys},
           "restricted": scalars[("progress.restricted", "logit.restricted_loss")]}
    print(f"\nkey frequencies {keys}\ngrokscope {got}\nreference {ref}")
    for name in ("train_loss", "train_loss_answers", "restricted"):
        assert got[name] == pytest.approx(ref[name], rel=1e-5, abs=1e-5), name
    for k in keys:
        assert got["excluded"][k] == pytest.approx(ref["excluded"][k], rel=1e-5, abs=1e-5), k


def test_optimizer_weight_decay_wins_with_one_warning(source, tmp_path):
    _, sds, _ = source
    file = paper_file(sds[1])
    file["optimizer"]["param_groups"][0]["weight_decay"] = 0.5
    torch.save(file, tmp_path / "final.pth")
    with pytest.warns(UserWarning, match=r"config says 1 but its optimizer used 0\.5; recording 0\.5") as rec:
        run = import_checkpoints(tmp_path / "final.pth", "nanda2023", tmp_path / "run")
    assert len([w for w in rec if "weight decay" in str(w.message)]) == 1
    assert run.train_config.weight_decay == 0.5
    assert run.meta["imported"]["weight_decay_config"] == 1.0
    assert run.meta["imported"]["weight_decay_optimizer"] == 0.5


def test_loss_curves_alone(tmp_path):
    from probes.phases import detect

    steps = torch.arange(3000, dtype=torch.float64)
    log_test = torch.from_numpy(__import__("numpy").interp(steps, [0, 300, 1500, 2000, 3000], [0.6, 1.0, 1.0, -4, -4]))
    curves = {"train_losses": (10 ** -(steps / 300)).tolist(), "test_losses": (10**log_test).tolist(),
              "config": {"p": 31, "fn_name": "subtract", "frac_train": 0.5, "seed": 2, "weight_decay": 0.3}}
    torch.save(curves, tmp_path / "curves.pth")
    run = import_checkpoints(tmp_path / "curves.pth", "nanda2023", tmp_path / "run")
    assert run.steps == [] and len(run.metrics) == 3000
    cfg = run.train_config
    assert (cfg.p, cfg.op, cfg.frac_train, cfg.data_seed, cfg.weight_decay) == (31, "sub", 0.5, 2, 0.3)
    assert run.task.train_idx.tolist() == paper_train_cells(31, 0.5, 2)
    ph = detect(run)  # phases work on an imported run: clean-up from the stored test loss
    # 5 decades over steps 1500..2000; 10% of the fall = 50 steps from either end
    assert abs(ph.circuit_end - 1550) <= 10 and abs(ph.cleanup_end - 1950) <= 10
    assert run.summary()["checkpoints"] == 0


def test_stored_split_explicit_or_recognised(source, tmp_path):
    _, sds, _ = source
    gen = torch.Generator().manual_seed(0)
    cells = sorted(torch.randperm(P * P, generator=gen)[:500].tolist())
    triples = [(c // P, c % P, P) for c in cells]
    torch.save(paper_file(sds[1], train_data=triples), tmp_path / "a.pth")
    run = import_checkpoints(tmp_path / "a.pth", "nanda2023", tmp_path / "a")
    assert run.train_config.split == "explicit" and run.task.train_idx.tolist() == cells
    split = run.meta["split"]
    run.update_meta(split={**split, "train_idx": split["train_idx"][:-1]})
    with pytest.raises(StoreError, match="do not match their SHA-256"):
        Run.open(run.path).task  # noqa: B018
    paper = paper_train_cells(P, FRAC, SEED)
    torch.save(paper_file(sds[1], train_indices=torch.tensor(paper)), tmp_path / "b.pth")
    run = import_checkpoints(tmp_path / "b.pth", "nanda2023", tmp_path / "b")
    assert run.train_config.split == "nanda2023" and run.task.train_idx.tolist() == paper


@dataclass
class PaperConfig:
    p: int = 113


def test_refuses_what_weights_only_cannot_read(source, tmp_path):
    _, sds, _ = source
    torch.save({**paper_file(sds[1]), "config": PaperConfig()}, tmp_path / "c.pth")
    with pytest.raises(StoreError, match=r"weights_only=True\) \(refusing to unpickle"):
        import_checkpoints(tmp_path / "c.pth", "nanda2023", tmp_path / "c")
    assert not (tmp_path / "c").exists()
