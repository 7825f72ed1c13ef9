"""Benchmarks of ``make bench`` (``python -m tests.bench``), one module per area: train, probes, diff,
sweep, dashboard. They sit outside the library packages, and pytest does not collect them (no test_*.py).
The shared rows, report and synthetic run are in :mod:`tests.bench.common`."""
