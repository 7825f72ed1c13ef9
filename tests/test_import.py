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
        "unembed.W_U": torch.cat([sd["unembed.W_U"], torch.randn(d, 1)], dim=1),  # [d, p+1]
    }
    for name in ("W_Q", "W_K", "W_V"):
        out[f"blocks.0.attn.{name}"] = sd[f"blocks.0.attn.{name}"].transpose(1, 2)  # [h, e, d]
    return {k: v.clone().contiguous() for k, v in out.items()}


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
    with torch.no_grad():
        return run.model_at(step)(run.task.inputs)[:, -1]


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
    run = import_checkpoints(path, "nanda2023", tmp_path / "imported", frac_train=0.4)
    assert run.steps == steps and run.status == "imported"
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
    assert out["embed.W_E"].shape == (v, d) and out["unembed.W_U"].shape == (d, v - 1)
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
