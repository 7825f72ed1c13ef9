"""probes.runner: caching, skipping, recomputation, corrupt checkpoints, in-memory measure, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import probes
from apps.cli.main import main as cli_main
from interp.errors import ConfigError, StoreError
from probes import runner
from probes.registry import REGISTRY, probe

NAME = "test.counter"


@pytest.fixture
def counter(monkeypatch):
    """``register(version, offset)`` (re)registers the non-default probe ``test.counter``, which records
    the steps it measures in ``calls`` and returns ssq(W_E) + offset, the row norms of W_E and p."""
    calls: list[int | None] = []
    monkeypatch.setitem(REGISTRY, NAME, REGISTRY.get("progress.loss"))  # removed again at teardown

    def register(version: int = 1, offset: float = 0.0, fail_at: int | None = None) -> None:
        @probe(NAME, version=version, default=False)
        def counter_probe(ctx):
            """Test probe: ssq of W_E plus an offset, W_E row norms, p."""
            if ctx.step == fail_at:
                raise RuntimeError(f"boom at {fail_at}")
            calls.append(ctx.step)
            w = ctx.model.embed.W_E.detach()
            return {"ssq_embed": w.pow(2).sum() + offset, "row_norms": w.norm(dim=1), "p": ctx.p}

    register()
    register.calls = calls
    return register


def _ssq(run, step: int) -> float:
    return float(run.state_dict_at(step)["embed.W_E"].double().pow(2).sum())


def test_run_writes_scalars_arrays_and_index(tiny_run_copy, counter, monkeypatch):
    run, steps = tiny_run_copy, tiny_run_copy.steps[:5]
    writes, write = [], runner.atomic_write_parquet
    monkeypatch.setattr(runner, "atomic_write_parquet", lambda path, df: writes.append(path) or write(path, df))
    df = probes.run(run, names=[NAME], steps=steps, progress=False)
    assert counter.calls == steps
    assert len(writes) == 1  # batched: one scalars write for the whole run, not one per checkpoint
    assert sorted(df["name"].unique()) == ["p", "ssq_embed"] and len(df) == 2 * len(steps)
    ssq = df[df["name"] == "ssq_embed"].set_index("step")["value"]
    assert ssq.to_dict() == pytest.approx({s: _ssq(run, s) for s in steps}, rel=1e-5)
    assert (df[df["name"] == "p"]["value"] == 47).all()
    got_steps, arrays = probes.load_arrays(run, NAME)
    assert got_steps.tolist() == steps and arrays["row_norms"].shape == (5, 48)
    want = run.state_dict_at(steps[2])["embed.W_E"].norm(dim=1).numpy()
    np.testing.assert_allclose(arrays["row_norms"][2], want, rtol=1e-6)
    index = json.loads((run.path / "probes" / "index.json").read_text())["probes"][NAME]
    assert index["version"] == 1 and index["steps"] == {str(s): run.checkpoint_hash(s) for s in steps}


def test_cached_pairs_are_skipped_and_new_steps_merged(tiny_run_copy, counter):
    run, steps = tiny_run_copy, tiny_run_copy.steps
    probes.run(run, names=[NAME], steps=steps[:3], progress=False)
    _, before = probes.load_arrays(run, NAME)
    probes.run(run, names=[NAME], steps=steps[:5], progress=False)
    assert counter.calls == steps[:3] + steps[3:5]  # only the two new steps were measured
    got_steps, after = probes.load_arrays(run, NAME)
    assert got_steps.tolist() == steps[:5]
    np.testing.assert_array_equal(after["row_norms"][:3], before["row_norms"])
    probes.run(run, names=[NAME], steps=steps[:5], progress=False)
    assert len(counter.calls) == 5
    assert len(probes.load(run)) == 2 * 5  # no duplicated rows


def test_version_bump_recomputes_and_replaces(tiny_run_copy, counter):
    run, steps = tiny_run_copy, tiny_run_copy.steps[:4]
    probes.run(run, names=[NAME], steps=steps, progress=False)
    counter(version=2, offset=1.0)
    assert probes.status(run, [NAME])["probes"][NAME]["reason"] == "probe version changed"
    df = probes.run(run, names=[NAME], steps=steps[:2], progress=False)
    assert counter.calls == steps + steps[:2]
    ssq = probes.load(run).query("name == 'ssq_embed'").set_index("step")["value"]
    assert ssq.index.tolist() == steps[:2]  # old-version results were dropped, not mixed in
    assert ssq.to_dict() == pytest.approx({s: _ssq(run, s) + 1.0 for s in steps[:2]}, rel=1e-5)
    assert probes.load_arrays(run, NAME)[0].tolist() == steps[:2]
    assert len(df) == 4


def test_params_change_recomputes(tiny_run_copy, counter):
    run, steps = tiny_run_copy, tiny_run_copy.steps[:3]
    probes.run(run, names=[NAME], steps=steps, progress=False)
    probes.run(run, names=[NAME], steps=steps, params={"fve_threshold": 0.5}, progress=False)
    assert counter.calls == steps + steps
    assert probes.status(run, [NAME], params={"fve_threshold": 0.5})["probes"][NAME]["up_to_date"] == 3
    assert probes.status(run, [NAME])["probes"][NAME]["reason"] == "params changed"
    probes.run(run, names=[NAME], steps=steps, params={"fve_threshold": 0.5}, progress=False)
    assert len(counter.calls) == 6


def test_rewritten_checkpoint_is_recomputed(tiny_run_copy, counter):
    run, steps = tiny_run_copy, tiny_run_copy.steps[:3]
    probes.run(run, names=[NAME], steps=steps, progress=False)
    old = probes.load(run).query("name == 'ssq_embed'").set_index("step")["value"][steps[1]]
    sd = run.state_dict_at(steps[1])
    sd["embed.W_E"] = sd["embed.W_E"] * 2
    run.save_checkpoint(steps[1], sd, {})
    assert probes.status(run, [NAME])["probes"][NAME]["missing"][:1] == [steps[1]]
    probes.run(run, names=[NAME], steps=steps, progress=False)
    assert counter.calls == [*steps, steps[1]]
    ssq = probes.load(run).query("name == 'ssq_embed'").set_index("step")["value"]
    assert ssq[steps[1]] == pytest.approx(4 * old, rel=1e-5)


def test_corrupt_checkpoint_skipped_with_warning(tiny_run_copy, counter):
    run, steps = tiny_run_copy, tiny_run_copy.steps[:4]
    bad = run.path / run.manifest[steps[2]]["file"]
    data = bytearray(bad.read_bytes())
    data[-10:] = b"\x00" * 10
    bad.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=bad.name):
        probes.run(run, names=[NAME], steps=steps, progress=False)
    assert counter.calls == [steps[0], steps[1], steps[3]]
    assert probes.status(run, [NAME])["probes"][NAME]["missing"][0] == steps[2]


def test_failing_probe_keeps_earlier_results(tiny_run_copy, counter):
    run, steps = tiny_run_copy, tiny_run_copy.steps[:4]
    counter(fail_at=steps[2])
    with pytest.raises(RuntimeError, match="boom"):
        probes.run(run, names=[NAME], steps=steps, progress=False)
    info = probes.status(run, [NAME])
    assert info["probes"][NAME]["up_to_date"] == 2 and info["probes"][NAME]["missing"][:2] == steps[2:]


def test_status_before_and_after(tiny_run_copy, counter):
    run = tiny_run_copy
    info = probes.status(run, [NAME])
    assert not info["complete"] and info["n_missing"] == len(run.steps)
    assert info["probes"][NAME] == {"missing": run.steps, "up_to_date": 0, "reason": "not computed"}
    probes.run(run, names=[NAME], progress=False)
    info = probes.status(run, [NAME])
    assert info["complete"] and info["probes"][NAME]["reason"] == "" and info["n_missing"] == 0


def test_measure_in_memory_matches_training_metrics(tiny_run):
    step = tiny_run.steps[-1]
    out = probes.measure(tiny_run.model_at(step), tiny_run.task, names=["progress.loss", "progress.weights"])
    row = tiny_run.metrics.set_index("step").loc[step]
    assert out["progress.loss"]["train_loss"] == pytest.approx(row["train_loss"], rel=1e-3, abs=1e-7)
    assert out["progress.loss"]["test_acc"] == pytest.approx(row["test_acc"])
    ssq = sum(float(v.double().pow(2).sum()) for v in tiny_run.state_dict_at(step).values())
    assert out["progress.weights"]["ssq_total"] == pytest.approx(ssq, rel=1e-9)


def test_all_default_probes_on_one_checkpoint(tiny_run_copy):
    run, step = tiny_run_copy, tiny_run_copy.steps[-1]
    df = probes.run(run, steps=[step], progress=False)
    defaults = probes.available(default_only=True)
    info = probes.status(run)
    applying = [n for n in defaults if not info["probes"][n]["reason"].startswith("does not apply")]
    assert "attention.seq_sinks" not in applying and "fourier.neurons" in applying  # skipped, with the reason
    assert all(info["probes"][n]["missing"] == [s for s in run.steps if s != step] for n in applying)
    names = set(zip(df["probe"], df["name"]))
    for pair in [("progress.loss", "test_acc"), ("progress.restricted", "logit.restricted_loss"),
                 ("progress.restricted", "act.excluded_loss"), ("li2", "grad_norm_hidden"),
                 ("li2", "energy_key_share"), ("progress.weights", "ssq_total")]:
        assert pair in names
    _, arrays = probes.load_arrays(run, "progress.restricted")
    per_freq = arrays["logit.excluded_loss_per_freq"]
    assert per_freq.shape == (1, 24) and math.isnan(per_freq[0, 0])
    assert probes.load_arrays(run, "li2")[1]["energy"].shape == (1, 128)
    assert probes.load_arrays(run, "progress.loss")[0].size == 0  # computed, scalars only


def test_errors_are_one_line(tiny_run_copy):
    run = tiny_run_copy
    with pytest.raises(ConfigError, match="unknown probe 'nope'"):
        probes.run(run, names=["nope"], progress=False)
    with pytest.raises(ConfigError, match="unknown probe parameter 'bogus'"):
        probes.run(run, names=["progress.loss"], params={"bogus": 1}, progress=False)
    with pytest.raises(StoreError, match="no checkpoint at step 7"):
        probes.run(run, names=["progress.loss"], steps=[7], progress=False)
    with pytest.raises(StoreError, match=r"no cached results for probe .progress\.loss."):
        probes.load_arrays(run, "progress.loss")
    assert probes.load(run).empty


def test_cli_probe(tiny_run_copy, capsys):
    path = str(tiny_run_copy.path)
    assert cli_main(["probe", path, "--probes", "progress.loss", "--steps", "0:20", "last", "--quiet"]) == 0
    assert set(probes.load(path)["step"]) == {0, 10, 20, tiny_run_copy.steps[-1]}
    assert "4 (probe, step) results computed" in capsys.readouterr().out
    assert cli_main(["probe", path, "--status", "--probes", "progress.loss"]) == 0
    assert f"4/{len(tiny_run_copy.steps)} steps" in capsys.readouterr().out
    assert cli_main(["probe", path, "--probes", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown probe 'nope'" in err


def test_progress_measures_use_the_final_key_frequencies(tiny_run_copy):
    """By default restricted/excluded loss use the final checkpoint's key frequencies (Nanda et al.
    2023); 'checkpoint' uses each checkpoint's own; only probes that declare key_freqs depend on it."""
    run = tiny_run_copy
    final = runner.final_key_frequencies(run, runner.merged_params(None))
    ctx_final = probes.ProbeContext(model=run.model_at(run.steps[-1]), task=run.task)
    assert final == sorted(int(k) for k in probes.fourier.key_frequencies(ctx_final)) and final
    early = run.steps[3]
    fixed = probes.measure(run.model_at(early), run.task, ["progress.restricted"], params={"key_freqs": final})
    own = probes.measure(run.model_at(early), run.task, ["progress.restricted"])
    df = probes.run(run, names=["progress.restricted", "fourier.embed"], steps=[early], progress=False)
    got = df[(df.probe == "progress.restricted") & (df.name == "logit.excluded_loss")].value.item()
    assert got == pytest.approx(fixed["progress.restricted"]["logit.excluded_loss"])
    assert got != pytest.approx(own["progress.restricted"]["logit.excluded_loss"])
    status = probes.status(run, ["progress.restricted", "fourier.embed"], key_freqs=[1])
    assert status["probes"]["progress.restricted"]["reason"] == "params changed"
    assert status["probes"]["fourier.embed"]["missing"] == [s for s in run.steps if s != early]


def test_context_cache_is_the_readout_cache_and_full_cache_has_every_position(tiny_run):
    """ctx.cache: the last layer at `=` only (so probes index [:, -1]); ctx.full_cache: run_with_cache."""
    from probes.registry import ProbeContext

    model = tiny_run.model_at(tiny_run.steps[-1])
    ctx = ProbeContext(model=model, task=tiny_run.task)
    p2, d_mlp = tiny_run.task.p ** 2, model.cfg.d_mlp
    assert tuple(ctx.cache["post", 0].shape) == (p2, 1, d_mlp)
    assert tuple(ctx.full_cache["post", 0].shape) == (p2, 3, d_mlp)
    np.testing.assert_allclose(ctx.cache["post", 0][:, -1].numpy(), ctx.full_cache["post", 0][:, -1].numpy(),
                               rtol=1e-5, atol=1e-5)
    assert tuple(ctx.logits.shape) == (p2, tiny_run.task.p)
    assert not ctx.cache["post", 0].requires_grad  # detached, as TL caches are


def test_array_only_probe_on_a_run_with_scalars(tiny_run_copy):
    """A run of probes without scalar outputs keeps the cached scalars readable (their string columns keep
    their type, so the file's digest matches what is read back)."""
    run = tiny_run_copy
    probes.run(run, names=["progress.loss"], steps=run.steps[:2], progress=False)
    df = probes.run(run, names=["fourier.neuron_acts"], steps=run.steps[:2], progress=False)
    assert len(df) == 0 and len(probes.load(run)) == 2 * 4
    assert probes.load_arrays(run, "fourier.neuron_acts")[0].tolist() == run.steps[:2]


def test_neuron_acts_skip_attention_only_models_and_sequence_tasks(short_config, tmp_path):
    from apps import figures
    from interp import train
    from interp.config import TrainConfig

    run = train(short_config.replace(attn_only=True), tmp_path / "attn", progress=False)
    spec = REGISTRY["fourier.neuron_acts"]
    assert "attention-only" in spec.reason_skipped(run.task, attn_only=True)
    assert spec.reason_skipped(run.task) == ""
    status = probes.status(run, ["fourier.neuron_acts"])
    assert status["probes"]["fourier.neuron_acts"]["reason"].startswith("does not apply")
    assert status["complete"]
    probes.run(run, names=["fourier.neuron_acts", "fourier.embed"], progress=False)
    assert not (run.path / "probes" / "fourier.neuron_acts.safetensors").exists()
    assert probes.measure(run.model_at(run.steps[-1]), run.task, ["fourier.neuron_acts"]) == {}
    with pytest.raises(LookupError):
        figures.animate_neuron(run)
    seq = TrainConfig(seq_task="sparse_sum", p=7, seq_len=8, n_train=50, n_test=20).task()
    assert spec.reason_skipped(seq)


def test_choose_neurons_per_key_frequency_and_the_fallback():
    """Per key frequency the neuron with the highest FVE on it; with none, the highest dominant FVE."""
    import torch

    from probes.frames import WATCH_FALLBACK, choose_neurons

    fve = torch.zeros(6, 5)  # [d_mlp, K+1]
    fve[2, 3], fve[4, 3], fve[1, 1], fve[5, 4], fve[0, 2] = 0.9, 0.95, 0.5, 0.99, float("nan")
    assert choose_neurons(fve, [3, 1]) == [[1, 1], [4, 3]]
    assert choose_neurons(fve, []) == [[5, 4], [4, 3], [2, 3]][:WATCH_FALLBACK]
