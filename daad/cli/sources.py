"""``daad sources``: the source catalogue."""

from __future__ import annotations

import json

from rich.table import Table

from daad.cli.app import JsonOption, ManifestsOption, app, console, open_registry

@app.command()
def sources(manifests: ManifestsOption = None, as_json: JsonOption = False) -> None:
    """The source catalogue: every origin, its licence and class map."""
    from daad.registry.catalogue import Catalogue

    catalogue = Catalogue.load(open_registry(manifests, None).manifests_dir)
    if as_json:
        print(json.dumps([
            {"id": e.id, "name": e.name, "licence": e.licence, "homepage": e.homepage,
             "classes": e.classes, "download": e.download.url if e.download else None, "loader": e.loader}
            for e in catalogue
        ], indent=2))
        return
    table = Table(title="sources")
    for col in ("origin", "name", "licence", "classes", "unmapped", "download"):
        table.add_column(col)
    for e in catalogue:
        mapped = sorted({c for c in e.classes.values() if c != "unmapped"})
        table.add_row(
            e.id, e.name, e.licence, ", ".join(mapped), str(len(e.unmapped)),
            "yes" if e.download else ("manual" if e.manual_download else
                                      (f"own collection ({e.loader})" if e.loader else "-")),
        )
    console.print(table)
