"""``daad audit``: prove after the fact that a generated dataset did not leak."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import EXIT_OK, EXIT_PROBLEMS, app, console, err_console, open_registry, output, print_json
from daad.cli.options import EvalOption, ManifestsOption, RootOption


@app.command()
def audit(
    generated: Annotated[Path, typer.Argument(help="A generated dataset folder (written by a generator).")],
    eval_: EvalOption,
    manifests: ManifestsOption = None,
    root: RootOption = None,
) -> None:
    """Re-check every real anomaly a generated dataset used; exit 1 naming each violation."""
    from daad.registry.audit import audit as run_audit

    report = run_audit(generated, eval_, open_registry(manifests, root))
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for violation in report.violations:
        console.print(f"[red]violation:[/] {violation}", highlight=False)
    console.print(
        f"{report.rows} rows, {report.sources_checked} real anomalies checked against {eval_}: "
        f"{len(report.violations)} violation(s)",
        highlight=False,
    )
    if output.json:
        print_json({"rows": report.rows, "checked": report.sources_checked, "evaluation": eval_,
                    "violations": [str(v) for v in report.violations], "warnings": [str(w) for w in report.warnings]})
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PROBLEMS)
