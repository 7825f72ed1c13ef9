import warnings

import pytest
import torch

from interp import CorruptCheckpointError, Run, StoreError, train
from interp.atomic import atomic_write_bytes


@pytest.fixture
def run(tmp_path, short_config):
    return train(short_config, tmp_path / "r", progress=False)


def test_flipped_byte_is_detected_and_named(run):
    path = run.path / "weights" / "step_00000020.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"step_00000020\.safetensors.*SHA-256"):
        run.state_dict_at(20)


def test_truncated_and_missing_files_are_named(run):
    path = run.path / "weights" / "step_00000040.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptCheckpointError, match=r"step_00000040\.safetensors.*truncated"):
        run.model_at(40)
    (run.path / "weights" / "step_00000060.safetensors").unlink()
    with pytest.raises(CorruptCheckpointError, match=r"step_00000060\.safetensors.*missing"):
        run.state_dict_at(60)


def test_scanning_readers_skip_corrupt_files_with_a_warning(run):
    path = run.path / "weights" / "step_00000020.safetensors"
    path.write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = [s for s, _ in run.iter_state_dicts()]
    assert 20 not in steps and len(steps) == len(run.steps) - 1
    assert any("step_00000020.safetensors" in str(w.message) for w in caught)


def test_unknown_step_and_bad_directories(run, tmp_path):
    with pytest.raises(StoreError, match="no checkpoint at step 7"):
        run.state_dict_at(7)
    assert run.nearest_step(7) == 10 and run.nearest_step(10_000) == 60
    with pytest.raises(StoreError, match="no run directory"):
        Run.open(tmp_path / "nope")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text('{"format_version": 0}')
    with pytest.raises(StoreError, match="format version 0"):
        Run.open(tmp_path / "old")
    with pytest.warns(UserWarning, match="skipping"):
        assert [r.path for r in Run.list(tmp_path)] == [run.path]


def test_interrupted_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_checkpoint_written_but_not_in_manifest_is_ignored(run):
    """A crash between writing weights and updating the manifest leaves a loadable run."""
    sd = run.state_dict_at(60)
    (run.path / "weights" / "step_00000061.safetensors").write_bytes(b"partial")
    reopened = Run.open(run.path)
    assert reopened.steps[-1] == 60
    assert all(torch.equal(reopened.state_dict_at(60)[k], v) for k, v in sd.items())


def test_corrupt_state_is_refused_for_resume(run):
    """Both generations damaged (one alone falls back: tests/test_robust_fallback.py)."""
    files = sorted((run.path / "state").glob("state_*.safetensors"))
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"x")
    with pytest.raises(StoreError, match=f"no usable training state.*{files[-1].name}"):
        run.load_state()


def save_state_dying_before_state_json(run, monkeypatch, tensors, info) -> None:
    """``run.save_state`` in a process that dies after writing the tensors, before state.json."""
    import interp.store as store

    real = store.atomic_write_json

    def crash(path, obj):
        if path.name == "state.json":
            raise KeyboardInterrupt
        real(path, obj)

    with monkeypatch.context() as m:
        m.setattr(store, "atomic_write_json", crash)
        with pytest.raises(KeyboardInterrupt):
            run.save_state(tensors, info)


def test_crash_while_saving_state_keeps_the_previous_state(run, monkeypatch):
    """The new tensors are on disk but state.json was never switched to them: resume still
    loads the previous, consistent state."""
    tensors, info = run.load_state()
    save_state_dying_before_state_json(run, monkeypatch, {k: v + 1 for k, v in tensors.items()},
                                       {**info, "step": info["step"] + 1})
    again, info_again = run.load_state()
    assert info_again["step"] == info["step"]
    assert all(torch.equal(again[k], v) for k, v in tensors.items())
    run.save_state(tensors, {**info, "step": info["step"] + 2})  # the next save cleans up the orphan
    left = sorted(p.name for p in (run.path / "state").glob("state_*"))  # this generation and the previous
    assert len(left) == 2 and left[0].startswith(f"state_{info['step']:08d}_")
    assert left[1].startswith(f"state_{info['step'] + 2:08d}_")


def test_crash_while_saving_state_at_the_same_step_keeps_it(run, monkeypatch):
    """A resumed run saves its state again at the step it resumed from, with other bytes when a
    hook drew from the RNG: the file state.json names must not be overwritten before it moves."""
    tensors, info = run.load_state()
    save_state_dying_before_state_json(run, monkeypatch, {**tensors, "rng.torch": torch.get_rng_state().flip(0)},
                                       info)
    again, _ = run.load_state()
    assert all(torch.equal(again[k], v) for k, v in tensors.items())


def test_state_of_the_earlier_single_file_layout_still_loads(run):
    tensors, info = run.load_state()
    state = run.path / "state"
    current = state / info["file"]
    current.rename(state / "state.safetensors")  # the layout before step-named files
    info = {k: v for k, v in info.items() if k != "file"}
    (state / "state.json").write_text(__import__("json").dumps(info))
    again, _ = run.load_state()
    assert all(torch.equal(again[k], v) for k, v in tensors.items())
    run.save_state(again, info)  # the next save moves to the new layout and removes the old file
    assert not (state / "state.safetensors").exists() and run.load_state()[1]["file"].startswith("state_")


def test_run_files_follow_the_umask(run):
    import os

    mask = os.umask(0)
    os.umask(mask)
    for f in ["run.json", "manifest.json", "metrics.parquet", "state/state.json"]:
        assert (run.path / f).stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_library_versions_are_recorded(run):
    versions = run.meta["versions"]
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    assert versions["transformer_lens"][0].isdigit()
