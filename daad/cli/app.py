"""The ``daad`` Typer application: the group that gives every command ``--json`` and ``--quiet``,
the exit codes, and opening the registry from the shared options (:mod:`daad.cli.options`)."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from daad.cli.options import ManifestsOption, RootOption  # noqa: F401  (also imported from here)
from daad.errors import DaadError

EXIT_OK = 0
EXIT_PROBLEMS = 1
"""The command ran and found problems: ``validate`` rejected records, ``audit`` found a leak, every ``fetch`` failed,
``curate sync`` met conflicts."""
EXIT_USAGE = 2
"""A wrong argument or option (an unknown value, a missing option): nothing was changed."""
EXIT_DATA = 3
"""The data or the installation stopped the command: a named record, file or manifest, or a missing extra."""
EXIT_CODES = (
    f"Exit codes: {EXIT_OK} done; {EXIT_PROBLEMS} checked and found problems (validate, audit, fetch, curate sync, curate annotate --load, protocol); "
    f"{EXIT_USAGE} usage error (a wrong option or value: nothing changed); "
    f"{EXIT_DATA} data error (a record, file or manifest, named on stderr) or a missing extra."
)


@dataclass
class Output:
    """``--json`` and ``--quiet`` of the command being run (every command has both)."""

    json: bool = False
    quiet: bool = False

    @property
    def progress(self) -> bool:
        """Progress bars: only for a person (neither ``--quiet`` nor ``--json``)."""
        return not (self.quiet or self.json)


output = Output()
console = Console()
err_console = Console(stderr=True)



JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (messages go to stderr).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _output_params() -> list:
    """Fresh ``--json`` and ``--quiet`` parameters, built by typer as for any command."""

    def template(as_json: JsonOption = False, quiet: QuietOption = False) -> None: ...

    probe = typer.Typer(add_completion=False)
    probe.command()(template)
    return typer.main.get_command(probe).params


def _with_output(callback, takes: set[str]):
    @functools.wraps(callback)
    def run(*args, as_json: bool = False, quiet: bool = False, **kwargs):
        output.json, output.quiet = as_json, quiet
        if as_json:
            console.file = sys.stderr  # stdout holds the JSON document alone
        try:
            return callback(*args, **kwargs, **{k: v for k, v in (("as_json", as_json), ("quiet", quiet)) if k in takes})
        finally:
            console.file = None  # back to whatever sys.stdout is then
            output.json = output.quiet = False
    return run


def _add_output_options(command) -> None:
    if hasattr(command, "commands"):
        for sub in command.commands.values():
            _add_output_options(sub)
        return
    if getattr(command, "_daad_output", False):
        return
    names = {p.name for p in command.params}
    command.params += [param for param in _output_params() if param.name not in names]
    command.callback = _with_output(command.callback, names & {"as_json", "quiet"})
    command._daad_output = True


class DaadGroup(TyperGroup):
    """The ``daad`` group: every command under it gets ``--json`` and ``--quiet``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            _add_output_options(command)


app = typer.Typer(
    name="daad",
    cls=DaadGroup,
    help="DAAD: the Domain-Agnostic Anomaly Dataset registry, builder and generators.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(help="Generate pseudo-anomalies for a target domain.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")


def print_json(value) -> None:
    """The result of a ``--json`` run: one JSON document on stdout."""
    typer.echo(json.dumps(value, indent=2, default=str))


class RegistryNotFoundError(DaadError):
    """The manifests folder a command was pointed at holds no registry."""


def root_options(values: list[str] | None) -> dict[str, Path]:
    """``--root ORIGIN=PATH`` values by origin (a usage error for any other form)."""
    from daad.registry.roots import parse_root_options

    try:
        return parse_root_options(values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--root") from None


def open_registry(manifests: Path | None, roots: list[str] | None, data: Path | None = None):
    """A Registry from the shared CLI options (``data``: the ``--data-dir`` where downloaded
    sources and their manifests are); a folder without a source catalogue is refused."""
    from daad.registry import Registry
    from daad.registry.catalogue import FILENAME
    from daad.registry.manifest import manifest_paths
    from daad.registry.roots import Roots

    registry = Registry(manifests, Roots(root_options(roots), data=data.expanduser().resolve() if data else None))
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
