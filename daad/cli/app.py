"""The ``daad`` Typer application and the options every command shares."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from daad.errors import DaadError

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

class RegistryNotFoundError(DaadError):
    """The manifests folder a command was pointed at holds no registry."""


ManifestsOption = Annotated[
    Path | None,
    typer.Option("--manifests", help="Manifest folder (default: $DAAD_MANIFESTS, else the registry shipped with daad)."),
]
RootOption = Annotated[
    list[str] | None,
    typer.Option("--root", help="ORIGIN=PATH, where an origin's files live (repeatable)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def open_registry(manifests: Path | None, roots: list[str] | None, data: Path | None = None):
    """A Registry from the shared CLI options (``data``: the ``--data-dir`` where downloaded
    sources and their manifests are); a folder without a source catalogue is refused."""
    from daad.registry.catalogue import FILENAME
    from daad.registry.manifest import manifest_paths
    from daad.registry import Registry
    from daad.registry.roots import Roots, parse_root_options

    try:
        explicit = parse_root_options(roots)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--root") from None
    registry = Registry(manifests, Roots(explicit, data=data.expanduser().resolve() if data else None))
    if not (registry.manifests_dir / FILENAME).is_file() and not manifest_paths(registry.manifests_dir):
        raise RegistryNotFoundError(
            f"no daad registry at {registry.manifests_dir} (no {FILENAME}, no manifest): "
            "pass --manifests DIR or set DAAD_MANIFESTS"
        )
    return registry


def _version(value: bool) -> None:
    if value:
        console.print(f"daad {version('daad')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print daad's version and exit.")
    ] = False,
) -> None:
    """DAAD: the Domain-Agnostic Anomaly Dataset registry, builder and generators."""
