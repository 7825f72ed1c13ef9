"""``grokscope`` command line: one module per subcommand, each with ``register(subparsers)``.

Every expected failure (bad value, missing run, corrupt file, unwritable path) is one line on
stderr and exit code 2, never a traceback. Commands that train or measure (``train``, ``probe``,
``diff``, ``sweep``) first apply the process settings (:func:`interp.perf.reuse_freed_memory`,
``--threads``): the command line is the entry point that owns the process.
"""

from __future__ import annotations

import argparse
import sys

from apps.cli import app, diff, fork, importer, probe, runs, sweep, train
from apps.cli.common import UsageError
from interp.errors import ConfigError, StoreError
from interp.perf import configure_process

COMMANDS = (train, fork, runs, probe, importer, diff, sweep, app)
EXPECTED_ERRORS = (ConfigError, StoreError, UsageError, OSError)  # OSError: unwritable, missing, full disk


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``grokscope train: error: ... (see --help)``, exit 2,
    instead of a usage block followed by the error. Subcommand parsers inherit it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="grokscope", description="Mechanistic interpretability of grokking.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "threads", 0) and args.threads < 0:
            raise UsageError(f"--threads: must be >= 0 (0: torch's default), got {args.threads}")
        if getattr(args, "process_settings", False):
            configure_process(getattr(args, "threads", 0) or None)  # 0: torch's default
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as e:
        print(f"grokscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grokscope: interrupted; resume with `grokscope train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
