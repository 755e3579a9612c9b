"""``daad stats``: counts of records per class x source x licence."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import RegistryNotFoundError, app, console, err_console, open_registry, output, print_json
from daad.cli.options import ManifestsOption, RootOption, checked_statuses


@app.command()
def stats(
    manifests: ManifestsOption = None,
    status: Annotated[str, typer.Option(help="Count records with this status ('all' for every status).")] = "accepted",
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw records per class by origin and by licence into this PNG (needs daad[eval]).")] = None,
    contact_sheet: Annotated[Path | None, typer.Option(
        "--contact-sheet", help="Also draw DIR/<class>.png: records of each class spread across origins, "
        "mask outlined (images read from the roots).")] = None,
    root: RootOption = None,
) -> None:
    """Counts of records per class x source x licence (near copies marked by `daad dedup` left out)."""
    checked_statuses([status], also=("all",))
    registry = open_registry(manifests, root)
    if not registry.manifests():
        raise RegistryNotFoundError(f"no manifests in {registry.manifests_dir}: pass --manifests DIR or set DAAD_MANIFESTS")
    counts: Counter = Counter()
    duplicates = 0
    for record in registry.records():
        if status == "all" or record.status == status:
            if record.duplicate_of is not None:
                duplicates += 1
                continue
            counts[(record.anomaly_class, str(record.source), record.licence)] += 1
    rows = [{"anomaly_class": c, "source": s, "licence": lic, "records": n} for (c, s, lic), n in sorted(counts.items())]
    if plot is not None:
        from daad.dataset.plots import plot_counts

        by_origin = Counter((r.anomaly_class, r.origin, r.licence) for r in registry.records()
                            if status == "all" or r.status == status)
        err_console.print(f"plot: {plot_counts(by_origin, plot, f'DAAD records ({status})')}")
    if contact_sheet is not None:
        from daad.dataset.sheets import class_sheets

        report = class_sheets(registry, contact_sheet, status)
        err_console.print(f"contact sheets: {len(report.sheets)} class(es) in {contact_sheet}")
        for reason, n in sorted(report.unreadable.items()):
            err_console.print(f"  not drawn ({reason}): {n}")
    if output.json:
        print_json(rows)
        return
    table = Table(title=f"records ({status})")
    for col in ("class", "source", "licence", "records"):
        table.add_column(col, justify="right" if col == "records" else "left")
    for row in rows:
        table.add_row(row["anomaly_class"], row["source"], row["licence"], str(row["records"]))
    table.add_section()
    table.add_row("total", "", "", str(sum(counts.values())))
    console.print(table)
    if duplicates:
        console.print(f"{duplicates} near copies of other records left out (duplicate_of, set by `daad dedup`)")
