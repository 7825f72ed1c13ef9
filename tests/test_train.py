import json
from dataclasses import fields

import pytest
import torch

from interp import Hook, ModelConfig, Run, TrainConfig, TrainHook, checkpoint_steps, grok_steps, preset, resume, train
from interp.config import ARCH_FIELDS, TASK_DERIVED_FIELDS, lr_at, parse_field
from interp.grokfast import Grokfast
from interp.hooks import EarlyStop


def test_default_schedule_gives_a_few_hundred_checkpoints():
    steps = checkpoint_steps(preset("nanda"))
    assert 200 <= len(steps) <= 400
    assert steps[0] == 0 and steps[-1] == 40_000
    assert steps[:11] == list(range(0, 101, 10)), "dense early"
    gaps = torch.tensor(steps).diff()
    assert gaps.max() <= 40_000 // 200, "every-N steps bound the largest gap"
    assert checkpoint_steps(preset("demo"))[-1] == 5_000


def test_warmup_is_linear_over_10_steps():
    cfg = TrainConfig()
    assert [round(lr_at(cfg, s) / cfg.lr, 2) for s in (0, 4, 9, 10, 1000)] == [0.1, 0.5, 1.0, 1.0, 1.0]


def _param(value):
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor(value, dtype=torch.float32)
    return p


def test_grokfast_ema_matches_definition():
    p = _param([1.0, 2.0])
    gf = Grokfast("ema", alpha=0.5, lamb=2.0, window=1)
    gf.apply({"w": p.grad})  # h = g = [1, 2]; g <- g + 2h = [3, 6]
    assert torch.allclose(p.grad, torch.tensor([3.0, 6.0]))
    p.grad = torch.tensor([3.0, 0.0])
    gf.apply({"w": p.grad})  # h = 0.5*[1,2] + 0.5*[3,0] = [2, 1]; g = [3,0] + 2*[2,1] = [7, 2]
    assert torch.allclose(gf.ema["w"], torch.tensor([2.0, 1.0]))
    assert torch.allclose(p.grad, torch.tensor([7.0, 2.0]))


def test_grokfast_ma_matches_definition():
    p = _param([1.0, 0.0])
    gf = Grokfast("ma", alpha=0.0, lamb=1.0, window=2)
    gf.apply({"w": p.grad})  # window not full: unchanged
    assert torch.allclose(p.grad, torch.tensor([1.0, 0.0]))
    p.grad = torch.tensor([3.0, 2.0])
    gf.apply({"w": p.grad})  # mean([1,0],[3,2]) = [2,1]; g = [5, 3]
    assert torch.allclose(p.grad, torch.tensor([5.0, 3.0]))
    p.grad = torch.tensor([1.0, 1.0])
    gf.apply({"w": p.grad})  # window [1,1],[3,2] (ring buffer) -> mean [2, 1.5]; g = [3, 2.5]
    assert torch.allclose(p.grad, torch.tensor([3.0, 2.5]))


def test_run_directory_layout(tmp_path, short_config):
    run = train(short_config, tmp_path / "r", progress=False)
    meta = json.loads((run.path / "run.json").read_text())
    assert meta["config"]["p"] == short_config.p and meta["status"] == "complete"
    assert meta["split"]["train_idx"] == short_config.task().train_idx.tolist()
    assert {"torch", "transformer_lens", "numpy"} <= set(meta["versions"])
    assert run.steps == checkpoint_steps(short_config)
    manifest = {k: v for k, v in json.loads((run.path / "manifest.json").read_text()).items() if k != "checksum"}
    assert len(manifest) == len(run.steps) and all(len(v["sha256"]) == 64 for v in manifest.values())
    assert (run.path / "weights" / "step_00000060.safetensors").exists()
    md = run.checkpoint_metadata(60)
    assert md["step"] == "60" and float(md["train_loss"]) == pytest.approx(run.metrics.iloc[-1].train_loss)
    m = run.metrics
    assert list(m.step) == list(range(61))
    assert set(m.columns) >= {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "weight_norm",
                              "grad_norm", "wall_time"}
    assert m.set_index("step").test_loss.dropna().index.tolist() == sorted(set(range(0, 61, 10)) | set(run.steps))
    sd = run.state_dict_at(60)
    model = run.model_at(60)
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    (state_file,) = (run.path / "state").glob("state_00000060_*.safetensors")
    assert json.loads((run.path / "state" / "state.json").read_text())["file"] == state_file.name
    assert Run.list(tmp_path)[0].path == run.path


@pytest.mark.parametrize("extra", [{}, {"grokfast": "ema"}, {"grokfast": "ma", "grokfast_window": 5},
                                   {"batch_size": 64}])
def test_resume_is_bit_identical(tmp_path, short_config, extra):
    cfg = short_config.replace(**extra)
    full = train(cfg, tmp_path / "full", progress=False)

    class Crash(Hook):
        def on_step_end(self, trainer, step, metrics):
            if step == 37:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part", hooks=[Crash()], progress=False)
    part = Run.open(tmp_path / "part")
    assert part.status == "running" and part.steps[-1] < 37
    resumed = resume(tmp_path / "part", progress=False)
    assert resumed.steps == full.steps
    for k, v in full.state_dict_at(60).items():
        assert torch.equal(resumed.state_dict_at(60)[k], v), k
    cols = ["step", "train_loss", "test_loss", "grad_norm", "weight_norm"]
    assert resumed.metrics[cols].equals(full.metrics[cols])


def test_resume_extends_a_finished_run(tmp_path, short_config):
    long = train(short_config.replace(n_steps=80), tmp_path / "long", progress=False)
    short = train(short_config, tmp_path / "short", progress=False)
    assert resume(short.path, progress=False).steps == short.steps, "complete run: nothing to do"
    extended = resume(short.path, n_steps=80, progress=False)
    # the schedule differs (n_steps changed) but the trajectory does not
    for k, v in long.state_dict_at(80).items():
        assert torch.equal(extended.state_dict_at(80)[k], v), k


def test_user_hooks_see_every_step_and_checkpoint(tmp_path, short_config):
    class Recorder(Hook):
        def __init__(self):
            self.steps, self.ckpts, self.started, self.ended = [], [], False, False

        def on_train_start(self, trainer):
            self.started = True

        def on_step_end(self, trainer, step, metrics):
            self.steps.append((step, metrics["train_loss"]))

        def on_checkpoint(self, trainer, step, model):
            self.ckpts.append(step)

        def on_train_end(self, trainer):
            self.ended = True

    rec = Recorder()
    run = train(short_config, tmp_path / "r", hooks=[rec], progress=False)
    assert rec.started and rec.ended
    assert [s for s, _ in rec.steps] == list(range(61))
    assert rec.ckpts == run.steps
    assert [loss for _, loss in rec.steps] == run.metrics.train_loss.tolist()


def test_hook_can_stop_training(tmp_path, short_config):
    class StopAt(Hook):
        def on_step_end(self, trainer, step, metrics):
            if step == 25:
                trainer.should_stop = True

    run = train(short_config, tmp_path / "r", hooks=[StopAt()], progress=False)
    assert run.steps[-1] == 25 and run.meta["stopped_early"] and run.metrics.step.max() == 25


@pytest.mark.slow
def test_tiny_groks_end_to_end(tiny_run):
    """Train accuracy reaches 100% well before test accuracy reaches 99%, which it does by the end."""
    g = grok_steps(tiny_run.metrics)
    assert g["memorized_step"] is not None and g["grokked_step"] is not None
    assert g["grokked_step"] >= 3 * g["memorized_step"], g
    assert tiny_run.metrics.test_acc.dropna().iloc[-1] >= 0.99
    assert tiny_run.metrics.train_acc.iloc[-1] == 1.0


def test_train_config_carries_every_model_architecture_field():
    """TrainConfig's model fields are ModelConfig's (less the task-derived ones), with the same
    types and defaults: a new ModelConfig option needs no edit here (interp.config generates them)."""
    train_fields = {f.name: f for f in fields(TrainConfig)}
    for f in fields(ModelConfig):
        if f.name in TASK_DERIVED_FIELDS:
            assert f.name not in train_fields, f"{f.name} is derived from the task, not a TrainConfig field"
            continue
        assert f.name in ARCH_FIELDS and f.name in train_fields, f"ModelConfig.{f.name} is missing from TrainConfig"
        assert train_fields[f.name].default == f.default, f"TrainConfig.{f.name} default differs from ModelConfig's"
    cfg = preset("tiny").replace(n_layers=2, act_fn="gelu", layernorm=True)
    mc = cfg.model_config()
    assert all(getattr(mc, name) == getattr(cfg, name) for name in ARCH_FIELDS)
    assert (mc.d_vocab, mc.d_vocab_out, mc.n_ctx) == (cfg.p + 1, cfg.p, 3)
    assert parse_field("d_mlp", "256") == 256 and parse_field("layernorm", "on") is True
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_early_stop_state_round_trips():
    stop = EarlyStop(patience=5)
    assert isinstance(stop, TrainHook)
    stop.on_step_end(None, 10, {"test_acc": 0.995})
    again = EarlyStop(patience=5)
    again.load_state_dict(json.loads(json.dumps(stop.state_dict())))
    assert again.since == 10


class _Crash(Hook):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, metrics):
        if step == self.step:
            raise KeyboardInterrupt


def test_resume_after_grokking_stops_where_an_uninterrupted_run_stops(tmp_path):
    """EarlyStop's counter is saved with the training state: a run interrupted after grokking
    stops at the same step, with the same weights and metrics, as one never interrupted."""
    cfg = preset("tiny").replace(stop_after_grok=100)
    full = train(cfg, tmp_path / "full", progress=False)
    final = full.meta["final_step"]
    grokked = grok_steps(full.metrics)["grokked_step"]
    assert full.meta["stopped_early"] and final == grokked + 100 < cfg.n_steps
    crash_at = final - 30  # after grokking, after a checkpoint, before the stop
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part", hooks=[_Crash(crash_at)], progress=False)
    part = Run.open(tmp_path / "part")
    assert grokked < part.state_step < crash_at
    resumed = resume(part.path, progress=False)
    assert resumed.meta["final_step"] == final and resumed.steps == full.steps
    for k, v in full.state_dict_at(final).items():
        assert torch.equal(resumed.state_dict_at(final)[k], v), k
    cols = ["step", "train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "weight_norm"]
    assert resumed.metrics[cols].equals(full.metrics[cols])


def test_user_hook_state_survives_a_resume(tmp_path, short_config):
    class Count(Hook):
        def __init__(self):
            self.n = 0

        def on_step_end(self, trainer, step, metrics):
            self.n += 1

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    whole = Count()
    train(short_config, tmp_path / "full", hooks=[whole], progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(short_config, tmp_path / "part", hooks=[Count(), _Crash(37)], progress=False)
    saved = json.loads((tmp_path / "part" / "state" / "state.json").read_text())
    assert saved["hooks"]["Count"] == {"n": saved["step"]}, "state from before the saved step's events"
    again = Count()
    resume(tmp_path / "part", hooks=[again], progress=False)
    assert again.n == whole.n == short_config.n_steps + 1


def test_batched_trainer_runs_user_hooks(tmp_path, short_config):
    from interp.batched import BatchedTrainer
    from interp.train import create_run

    class Recorder(Hook):
        def __init__(self):
            self.steps, self.ckpts = [], []

        def on_step_end(self, trainer, step, metrics):
            self.steps.append(step)

        def on_checkpoint(self, trainer, step, model):
            self.ckpts.append((step, {k: v.clone() for k, v in model.state_dict().items()}))

    cfgs = [short_config, short_config.replace(seed=1)]
    runs = [create_run(c, tmp_path / f"r{i}") for i, c in enumerate(cfgs)]
    recs = [Recorder(), Recorder()]
    BatchedTrainer(cfgs, runs, device="cpu", progress=False, hooks=[[r] for r in recs]).fit()
    for run, rec in zip(runs, recs):
        assert rec.steps == list(range(61)) and [s for s, _ in rec.ckpts] == run.steps
        step, sd = rec.ckpts[-1]
        assert all(torch.equal(run.state_dict_at(step)[k], v) for k, v in sd.items())
