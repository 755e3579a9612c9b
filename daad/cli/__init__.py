"""Command-line interface: ``daad <command>``. Each module registers its commands on ``app``."""

from __future__ import annotations

import sys

from rich.markup import escape

from daad.cli import download as _download  # noqa: F401  (download)
from daad.cli import ingest as _ingest  # noqa: F401  (ingest)
from daad.cli import validate as _validate  # noqa: F401  (validate)
from daad.cli import build as _build  # noqa: F401  (build)
from daad.cli import stats as _stats  # noqa: F401  (stats)
from daad.cli import sources as _sources  # noqa: F401  (sources)
from daad.cli import dedup as _dedup  # noqa: F401  (dedup)
from daad.cli import curate as _curate  # noqa: F401  (curate open, curate sync)
from daad.cli import curate_annotate as _curate_annotate  # noqa: F401  (curate annotate)
from daad.cli import fetch as _fetch  # noqa: F401  (fetch)
from daad.cli import synth as _synth  # noqa: F401  (synth cai, baselines)
from daad.cli import cdm as _cdm  # noqa: F401  (synth cdm train|sample)
from daad.cli import dualanodiff as _dualanodiff  # noqa: F401  (synth dualanodiff train|sample)
from daad.cli import eval as _eval  # noqa: F401  (eval)
from daad.cli import protocol as _protocol  # noqa: F401  (protocol)
from daad.cli import export as _export  # noqa: F401  (export)
from daad.cli import audit as _audit  # noqa: F401  (audit)
from daad.cli import exclusions as _exclusions  # noqa: F401  (exclusions hash)
from daad.cli import push as _push  # noqa: F401  (push)
from daad.cli.app import EXIT_DATA, app, err_console
from daad.errors import DaadError


EXTRAS = {
    "fiftyone": "curate", "psutil": "curate", "label_studio_sdk": "curate", "rembg": "foreground", "onnxruntime": "foreground",
    "torch": "eval", "sklearn": "eval", "matplotlib": "eval",
    "diffusers": "diffusion", "transformers": "diffusion", "peft": "diffusion", "accelerate": "diffusion",
    "ray": "ray",
}
"""The extra that installs each optional package a command may import."""


def main() -> None:
    """Entry point of the ``daad`` console script: daad errors and missing extras print as one clear line
    and exit with :data:`~daad.cli.app.EXIT_DATA` (usage errors exit 2, as click makes them)."""
    try:
        app()
    except DaadError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(EXIT_DATA)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in EXTRAS:
            raise
        advice = f'pip install "daad[{EXTRAS[package]}]"'
        err_console.print(f"[bold red]error:[/] this command needs {package}: {escape(advice)}", highlight=False)
        sys.exit(EXIT_DATA)
