"""Issue 16: the probe cache heals. Missing or damaged scalars or arrays are recomputed, and
``grokscope probe`` says so."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import probes
from apps.cli.main import main
from interp import train

NAMES = ["li2", "fourier.embed"]


@pytest.fixture
def probed(short_config, tmp_path):
    run = train(short_config, tmp_path / "r", progress=False)
    probes.run(run, names=NAMES, progress=False)
    return run, probes.load(run), probes.load_arrays(run, "fourier.embed")


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["rm scalars", "flip scalars", "rm arrays", "flip arrays", "truncate arrays"])
def test_probe_cache_heals_and_says_so(probed, damage, capsys):
    run, scalars, (steps, arrays) = probed
    root = run.path / "probes"
    target = root / ("scalars.parquet" if "scalars" in damage else "fourier.embed.safetensors")
    if damage.startswith("rm"):
        target.unlink()
    elif damage == "flip scalars":  # a changed value under the old checksum, as a flipped data bit gives
        df = pq.read_table(target)
        values = df.column("value").to_numpy().copy()
        values[0] += 1.0
        pq.write_table(df.set_column(df.schema.get_field_index("value"), "value", pa.array(values)), target)
    elif damage.startswith("flip"):
        _flip(target, len(target.read_bytes()) // 2)
    else:
        target.write_bytes(target.read_bytes()[:300])
    assert not probes.status(run, NAMES)["complete"]
    capsys.readouterr()
    assert main(["probe", str(run.path), "--probes", *NAMES, "--quiet"]) == 0
    out, err = capsys.readouterr()
    n = int(out.split(": ", 1)[1].split()[0])
    assert n > 0 and "warning: probe cache:" in err, (out, err)
    assert probes.status(run, NAMES)["complete"]
    again = probes.load(run)
    assert again.sort_values(["probe", "step", "name"]).reset_index(drop=True).equals(
        scalars.sort_values(["probe", "step", "name"]).reset_index(drop=True))
    steps2, arrays2 = probes.load_arrays(run, "fourier.embed")
    assert np.array_equal(steps, steps2) and all(np.array_equal(arrays[k], arrays2[k]) for k in arrays)
