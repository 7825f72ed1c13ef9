import pytest

from apps import demo


@pytest.mark.slow
def test_demo_end_to_end_without_the_app(tmp_path, capsys):
    """What `make demo` runs, on the tiny preset: train, probe, transition report; a second call resumes."""
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--preset", "tiny", "--no-app"]) == 0
    assert (out / "transition.html").stat().st_size > 10_000
    assert (out / "transition.md").read_text().startswith("#")
    assert (out / "probes").is_dir()
    text = capsys.readouterr().out
    assert "transition report" in text and "test acc 1.000" in text
    assert demo.main(["--out", str(out), "--preset", "tiny", "--no-app"]) == 0
    assert "exists: resuming it" in capsys.readouterr().out
