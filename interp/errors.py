"""The library's exceptions: a leaf module that every layer may import.

Library code raises these; only the command line (``apps.cli``) turns them into one-line
messages and exit code 2. Each message names the field, file or value at fault.
"""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class StoreError(RuntimeError):
    """A run directory is missing, incomplete, damaged or of an unknown format."""


class CorruptCheckpointError(StoreError):
    """A checkpoint file does not match its manifest hash or cannot be parsed."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"corrupt checkpoint {path}: {why}")
        self.path = path
