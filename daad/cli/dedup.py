"""``daad dedup``: mark records that are near copies of another origin's record."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import app, console, open_registry, output, print_json
from daad.cli.options import ManifestsOption, RootOption

@app.command()
def dedup(
    manifests: ManifestsOption = None,
    root: RootOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report the marks; write nothing.")] = False,
) -> None:
    """Mark records that are near copies (any rotation or mirror, crops, re-encoding) of
    another origin's record with duplicate_of; builds and views leave them out."""
    from daad.registry.dedup import dedup as run_dedup

    report = run_dedup(open_registry(manifests, root), dry_run=dry_run, progress=output.progress)
    duplicates = report.duplicates()
    if output.json:
        print_json({
            "records": dict(sorted(report.records.items())),
            "duplicates": [{"origin": o, "of": k, "records": n} for (o, k), n in sorted(duplicates.items())],
            "unchecked": len(report.unchecked),
            "rejected_by_detail": dict(sorted(report.refused().items())),
            "added": report.added, "removed": report.removed, "written": report.written,
        })
        return
    table = Table(title="dedup" + (" (dry run: nothing written)" if dry_run else ""))
    for col in ("origin", "records", "duplicates", "of origin", "detail refused", "unchecked"):
        table.add_column(col, justify="left" if col in ("origin", "of origin") else "right")
    unchecked = Counter(rid.split("/", 1)[0] for rid in report.unchecked)
    rejected = report.refused()
    for origin, n in sorted(report.records.items()):
        of = Counter({k: c for (o, k), c in duplicates.items() if o == origin})
        table.add_row(origin, str(n), str(sum(of.values())), ", ".join(f"{k} {c}" for k, c in sorted(of.items())),
                      str(rejected[origin]), str(unchecked[origin]))
    console.print(table)
    for rid, why in sorted(report.unchecked.items())[:10]:
        console.print(f"unchecked {rid}: {why}", highlight=False)
    if len(report.unchecked) > 10:
        console.print(f"... and {len(report.unchecked) - 10} more unchecked (pass --root ORIGIN=PATH)")
    console.print(f"{len(report.rejected)} record(s) left unmarked: the detail check refused every candidate the "
                  "hashes and fine signatures confirmed", highlight=False)
    verb = "would change" if dry_run else "changed"
    console.print(f"{verb}: {report.added} mark(s) set, {report.removed} cleared; "
                  f"manifests written: {', '.join(report.written) or 'none'}")
