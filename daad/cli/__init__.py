"""Command-line interface: ``daad <command>``. Each module registers its commands on ``app``."""

from __future__ import annotations

import sys

from daad.cli import registry as _registry  # noqa: F401  (ingest, validate, build, stats, sources)
from daad.cli import curate as _curate  # noqa: F401  (curate open, curate sync)
from daad.cli import sources as _sources  # noqa: F401  (fetch)
from daad.cli import synth as _synth  # noqa: F401  (synth cai, baselines)
from daad.cli import cdm as _cdm  # noqa: F401  (synth cdm train|sample)
from daad.cli import dualanodiff as _dualanodiff  # noqa: F401  (synth dualanodiff train|sample)
from daad.cli import download as _download  # noqa: F401  (download)
from daad.cli import evaluate as _evaluate  # noqa: F401  (eval)
from daad.cli import leakage as _leakage  # noqa: F401  (audit, exclusions hash)
from daad.cli.app import app, err_console
from daad.errors import DaadError


def main() -> None:
    """Entry point of the ``daad`` console script: daad errors print as one clear message."""
    try:
        app()
    except DaadError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
