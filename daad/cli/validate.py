"""``daad validate``: every record checked against its file."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import JsonOption, ManifestsOption, QuietOption, RootOption, app, console, open_registry

@app.command()
def validate(
    manifests: ManifestsOption = None,
    root: RootOption = None,
    origin: Annotated[list[str] | None, typer.Option("--origin", help="Only these origins.")] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Check every record against its file; exit 1 when anything is rejected."""
    from daad.registry.validate import validate as run_validate

    report = run_validate(open_registry(manifests, root), origin, progress=not (quiet or as_json))
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        table = Table(title="validate")
        table.add_column("result")
        table.add_column("reason")
        table.add_column("records", justify="right")
        table.add_row("accepted", "", str(report.accepted))
        for reason, n in sorted(report.rejected.items()):
            table.add_row("rejected", reason, str(n))
        for reason, n in sorted(report.skipped.items()):
            table.add_row("skipped", reason, str(n))
        console.print(table)
        for error in report.errors[:50]:
            console.print(f"[red]{error['message']}[/]", highlight=False)
    raise typer.Exit(0 if report.ok else 1)
