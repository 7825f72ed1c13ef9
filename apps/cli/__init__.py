"""The ``grokscope`` command line: :func:`apps.cli.main.main`, one module per subcommand.

    python -m apps.cli --help        # the same as `grokscope --help`
"""
