"""The ``daad`` Typer application and the options every command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="daad",
    help="DAAD: the Domain-Agnostic Anomaly Dataset registry, builder and generators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(help="Generate pseudo-anomalies for a target domain.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")

console = Console()
err_console = Console(stderr=True)

ManifestsOption = Annotated[
    Path | None,
    typer.Option("--manifests", help="Manifest folder (default: $DAAD_MANIFESTS or the checkout's manifests/)."),
]
RootOption = Annotated[
    list[str] | None,
    typer.Option("--root", help="ORIGIN=PATH, where an origin's files live (repeatable)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def open_registry(manifests: Path | None, roots: list[str] | None, data: Path | None = None):
    """A Registry from the shared CLI options (``data``: the ``--data-dir`` where downloaded
    sources and their manifests are)."""
    from daad.registry import Registry
    from daad.roots import Roots, parse_root_options

    try:
        explicit = parse_root_options(roots)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--root") from None
    return Registry(manifests, Roots(explicit, data=data.expanduser().resolve() if data else None))
