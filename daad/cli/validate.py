"""``daad validate``: every record checked against its file."""

from __future__ import annotations


import typer
from rich.table import Table

from daad.cli.app import EXIT_OK, EXIT_PROBLEMS, app, console, open_registry, output, print_json
from daad.cli.options import ManifestsOption, OriginsOption, RootOption, checked_origins

@app.command()
def validate(
    manifests: ManifestsOption = None,
    root: RootOption = None,
    origin: OriginsOption = None,
) -> None:
    """Check every record against its file; exit 1 when anything is rejected."""
    from daad.registry.validate import validate as run_validate

    registry = open_registry(manifests, root)
    report = run_validate(registry, checked_origins(registry, origin), progress=output.progress)
    if output.json:
        print_json(report.to_json())
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
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PROBLEMS)
