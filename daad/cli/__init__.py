"""Command-line interface: ``daad <command>``. Each module registers its commands on ``app``."""

from __future__ import annotations

import sys

from daad.cli import registry as _registry  # noqa: F401  (ingest, validate, build, stats, sources)
from daad.cli.app import app, err_console
from daad.errors import DaadError


def main() -> None:
    """Entry point of the ``daad`` console script: daad errors print as one clear message."""
    try:
        app()
    except DaadError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
