"""Probes: measurements of one checkpoint, run over every checkpoint of a run and cached.

    import probes
    probes.run(run)            # measure every checkpoint, cached under RUN/probes/
    df = probes.load(run)      # long format: step, probe, name, value
    steps, arrays = probes.load_arrays(run, "fourier.embed")
    probes.measure(model, task)  # a model in memory: {probe: {name: value}}
    probes.status(run)         # which probes/steps are missing

Importing this package registers the built-in probes (fourier, attention, progress/Li2).
"""

from probes import attention, fourier, frames, llc, progress, seqattention, stability  # noqa: F401  (register the built-in probes)
from probes.registry import DEFAULT_PARAMS, REGISTRY, ProbeContext, available, probe
from probes.runner import load, load_arrays, measure, run, status

__all__ = [
    "DEFAULT_PARAMS", "REGISTRY", "ProbeContext", "available", "load", "load_arrays", "measure", "probe", "run",
    "status",
]
