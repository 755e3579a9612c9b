"""``daad sources``: the source catalogue."""

from __future__ import annotations


from rich.table import Table

from daad.cli.app import app, console, open_registry, output, print_json
from daad.cli.options import ManifestsOption

@app.command()
def sources(manifests: ManifestsOption = None) -> None:
    """The source catalogue: every origin, its licence and class map."""
    from daad.registry.catalogue import Catalogue

    catalogue = Catalogue.load(open_registry(manifests, None).manifests_dir)
    if output.json:
        print_json([
            {"id": e.id, "name": e.name, "licence": e.licence, "homepage": e.homepage,
             "classes": e.classes, "unlisted_classes": e.unlisted_classes,
             "download": e.download.url if e.download else None, "loader": e.loader}
            for e in catalogue
        ])
        return
    table = Table(title="sources")
    for col in ("origin", "name", "licence", "classes", "unmapped", "download"):
        table.add_column(col)
    for e in catalogue:
        mapped = sorted({c for c in e.classes.values() if c != "unmapped"})
        table.add_row(
            e.id, e.name, e.licence, ", ".join(mapped),
            f"{len(e.unmapped)}" + (" + names not listed" if e.unlisted_classes else ""),
            "yes" if e.download else ("manual" if e.manual_download else
                                      (f"own collection ({e.loader})" if e.loader else "-")),
        )
    console.print(table)
