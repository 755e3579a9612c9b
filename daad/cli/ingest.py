"""``daad ingest``: a source (or your own collection) read by its loader into its manifest."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import app, console, open_registry, output, print_json, root_options
from daad.cli.options import ManifestsOption, RootOption


@app.command()
def ingest(
    origin: Annotated[str, typer.Argument(help="Origin id, e.g. sd_saliency_900, or the name of your own collection.")],
    loader: Annotated[str | None, typer.Option(
        "--loader", help="Ingest a collection of your own named ORIGIN, in this layout: folder or mvtec_ad.")] = None,
    allow_remove: Annotated[bool, typer.Option(
        "--allow-remove", help="Let this ingest remove more than 5% of the origin's records.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Collection: display name.")] = None,
    licence: Annotated[str | None, typer.Option("--licence", help="Collection: SPDX id or LicenseRef-....")] = None,
    citation: Annotated[str | None, typer.Option("--citation", help="Collection: how to cite it.")] = None,
    source: Annotated[str | None, typer.Option(
        "--source", help="Collection: online_search, reality_photo or existing_dataset.")] = None,
    homepage: Annotated[str | None, typer.Option("--homepage", help="Collection: where it is described.")] = None,
    class_map: Annotated[list[str] | None, typer.Option(
        "--class-map", help="Collection: NATIVE=CLASS, a native class name and its DAAD class (repeatable).")] = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
) -> None:
    """Read a source (or your own collection) with its loader and write manifests/<origin>.jsonl (curation kept)."""
    from daad.registry.catalogue import Catalogue, load_collections
    from daad.registry.collection import CollectionError, collection_entry, save_collection
    from daad.sources.ingest import RemovalRefusedError, ingest_root, plan_ingest
    from daad.loaders import get_loader

    registry = open_registry(manifests, root)
    path = ingest_root(origin, registry.roots, given=root_options(root))
    catalogue = Catalogue.load(registry.manifests_dir)
    collections = load_collections(registry.manifests_dir)
    flags = {"name": name, "licence": licence, "citation": citation, "source": source, "homepage": homepage,
             "classes": dict(_native_class(c) for c in class_map) if class_map else None}
    collection = loader is not None or origin in collections
    if collection:
        if origin in catalogue and origin not in collections:
            raise CollectionError(f"{origin!r} is a published source in the catalogue; give your collection "
                                  f"another name: `daad ingest my_{origin} --loader {loader or 'folder'} --root my_{origin}=PATH`")
        previous = collections.get(origin)
        entry = collection_entry(origin, loader or previous.loader, path, flags, previous)
    elif origin not in catalogue:
        raise CollectionError(f"{origin!r} is not in the catalogue; to ingest a collection of your own under this "
                              f"name run `daad ingest {origin} --loader folder --root {origin}=PATH` (or --loader mvtec_ad)")
    else:
        if any(v is not None for v in flags.values()):
            raise CollectionError(f"--name/--licence/--citation/--source/--homepage/--class-map describe a collection of "
                                  f"your own; {origin!r} is a published source (its entry is in sources.toml). "
                                  f"For a collection of your own run `daad ingest my_{origin} --loader folder --root my_{origin}=PATH ...`")
        entry = catalogue[origin]
    manifest = registry.manifests_dir / f"{origin}.jsonl"
    try:
        plan = plan_ingest(get_loader(origin, entry).iter_records(path, entry), manifest, allow_remove=allow_remove)
    except RemovalRefusedError as exc:
        if not output.json:
            console.print(_ingest_table(origin, exc.plan.report))
            console.print(f"would remove {len(exc.removed_ids)} record(s):", highlight=False)
            for rid in exc.removed_ids[:50]:
                console.print(f"  {rid}", highlight=False, markup=False)
        raise
    if collection and save_collection(registry.manifests_dir, entry) and not output.json:
        console.print(f"catalogue entry of collection {origin} written to collections.toml", highlight=False)
    report = plan.write(manifest)
    if output.json:
        print_json(report.to_json())
        return
    console.print(_ingest_table(origin, report))
    for reason, n in sorted(report.skipped.items()):
        console.print(f"skipped {n}: {reason}")
    if report.skipped_items:
        skipped = Table(title="skipped items")
        for col in ("id", "file", "reason", "detail"):
            skipped.add_column(col, overflow="fold")
        for item in report.skipped_items:
            skipped.add_row(item["id"], item["file"] or "", item["reason"], item["detail"])
        console.print(skipped)
    for label, n in sorted(report.unmapped.items()):
        console.print(f"unmapped native class {label!r}: {n} record(s) (kept in the manifest, not built)")
    console.print("manifest written" if report.written else "manifest unchanged")


def _ingest_table(origin: str, report) -> Table:
    from daad.sources.ingest import COLUMNS

    table = Table(title=f"ingest {origin}")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    table.add_row(*report.row())
    return table


def _native_class(text: str) -> tuple[str, str]:
    native, sep, daad_class = text.partition("=")
    if not sep or not native or not daad_class:
        raise typer.BadParameter(f"{text!r} is not NATIVE=CLASS (e.g. kratzer=scratch)", param_hint="--class-map")
    return native, daad_class
