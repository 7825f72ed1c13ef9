"""Probes: measurements of one checkpoint, run over every checkpoint of a run and cached.

    import probes
    probes.run(run)            # measure every checkpoint, cached under RUN/probes/
    df = probes.load(run)      # long format: step, probe, name, value
"""

from probes.registry import DEFAULT_PARAMS, REGISTRY, ProbeContext, available, probe

__all__ = ["DEFAULT_PARAMS", "REGISTRY", "ProbeContext", "available", "probe"]
