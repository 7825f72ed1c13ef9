"""``python -m apps.serve ARGS``: ``streamlit ARGS`` (``grokscope app`` runs the dashboard this way) with the
dashboard's heavy imports (torch, Plotly, the probes and the pages' shared modules) done before the server
starts, so the first page a browser opens does not wait for them: Streamlit runs the script in this process,
and only on the first visit."""

from __future__ import annotations

import sys


def warm() -> None:
    """Import what every dashboard page needs (each import is a no-op when done already)."""
    import plotly.graph_objects  # noqa: F401
    import torch  # noqa: F401

    import apps.figures
    import apps.ui  # noqa: F401
    import probes  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    warm()
    from streamlit.web import cli

    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
