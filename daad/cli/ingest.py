"""Registry commands: ingest, validate, build, stats, sources."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import JsonOption, ManifestsOption, QuietOption, RootOption, app, console, err_console, open_registry
from daad.cli.download import (
    AcceptLicenceOption, BaseUrlOption, DataDirOption, LicencePolicyOption, default_origins, prepare_sources,
)


@app.command()
def ingest(
    origin: Annotated[str, typer.Argument(help="Origin id, e.g. sd_saliency_900, or the name of your own collection.")],
    root: Annotated[str, typer.Option("--root", help="The origin's folder as its authors publish it (PATH or ORIGIN=PATH).")],
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
        "--class", help="Collection: NATIVE=CLASS, a native class name and its DAAD class (repeatable).")] = None,
    manifests: ManifestsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read a source (or your own collection) with its loader and write manifests/<origin>.jsonl (curation kept)."""
    from daad.registry.catalogue import Catalogue, load_collections
    from daad.registry.collection import CollectionError, collection_entry, save_collection
    from daad.sources.ingest import RemovalRefusedError, ingest_root, plan_ingest
    from daad.loaders import get_loader

    registry = open_registry(manifests, None)
    path = ingest_root(origin, root)
    catalogue = Catalogue.load(registry.manifests_dir)
    collections = load_collections(registry.manifests_dir)
    flags = {"name": name, "licence": licence, "citation": citation, "source": source, "homepage": homepage,
             "classes": dict(_native_class(c) for c in class_map) if class_map else None}
    collection = loader is not None or origin in collections
    if collection:
        if origin in catalogue and origin not in collections:
            raise CollectionError(f"{origin!r} is a published source in the catalogue; give your collection "
                                  f"another name: `daad ingest my_{origin} --loader {loader or 'folder'} --root PATH`")
        previous = collections.get(origin)
        entry = collection_entry(origin, loader or previous.loader, path, flags, previous)
    elif origin not in catalogue:
        raise CollectionError(f"{origin!r} is not in the catalogue; to ingest a collection of your own under this "
                              f"name run `daad ingest {origin} --loader folder --root PATH` (or --loader mvtec_ad)")
    else:
        if any(v is not None for v in flags.values()):
            raise CollectionError(f"--name/--licence/--citation/--source/--homepage/--class describe a collection of "
                                  f"your own; {origin!r} is a published source (its entry is in sources.toml). "
                                  f"For a collection of your own run `daad ingest my_{origin} --loader folder --root PATH ...`")
        entry = catalogue[origin]
    manifest = registry.manifests_dir / f"{origin}.jsonl"
    try:
        plan = plan_ingest(get_loader(origin, entry).iter_records(path, entry), manifest, allow_remove=allow_remove)
    except RemovalRefusedError as exc:
        if not as_json:
            console.print(_ingest_table(origin, exc.plan.report))
            console.print(f"would remove {len(exc.removed_ids)} record(s):", highlight=False)
            for rid in exc.removed_ids[:50]:
                console.print(f"  {rid}", highlight=False, markup=False)
        raise
    if collection and save_collection(registry.manifests_dir, entry) and not as_json:
        console.print(f"catalogue entry of collection {origin} written to collections.toml", highlight=False)
    report = plan.write(manifest)
    if as_json:
        console.print_json(json.dumps(report.to_json()))
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
        raise typer.BadParameter(f"{text!r} is not NATIVE=CLASS (e.g. kratzer=scratch)", param_hint="--class")
    return native, daad_class


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


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Output folder (load it with load_dataset(path)).")] = Path("build/daad"),
    manifests: ManifestsOption = None,
    root: RootOption = None,
    origin: Annotated[list[str] | None, typer.Option("--origin", help="Only these origins.")] = None,
    quiet: QuietOption = False,
    fetch: Annotated[bool, typer.Option(
        "--download/--no-download", help="Download the open sources that have no root first (default), "
        "and build the origins that are then on disk.")] = True,
    data_dir: DataDirOption = None,
    base_url: BaseUrlOption = None,
    accept_licence: AcceptLicenceOption = None,
    licence_policy: LicencePolicyOption = "all",
    workers: Annotated[int, typer.Option(
        "--workers", help="Worker processes (0: one per CPU); the output is the same for any number.")] = 0,
    reuse: Annotated[bool, typer.Option(
        "--reuse", help="Keep the previous build's shards of origins whose inputs did not change "
        "(their image files are not read again; `daad validate` checks them).")] = False,
    weak_masks: Annotated[bool, typer.Option(
        "--weak-masks/--no-weak-masks", help="Include records whose mask is only a coarse region around "
        "the anomaly (DAGM 2007's ellipses; default), or leave them out.")] = True,
) -> None:
    """Build the Hugging Face dataset folder from the manifests, deterministically and atomically."""
    from daad.dataset.build import build as run_build
    from daad.licences import LicenceCatalogue, LicencePolicy

    package = Path(__file__).resolve().parents[1]
    if out.resolve().is_relative_to(package):
        raise typer.BadParameter(f"refusing to write into the daad package folder {package}", param_hint="--out")
    registry = open_registry(manifests, root, data_dir)
    policy = LicencePolicy.parse(licence_policy, LicenceCatalogue.load(registry.manifests_dir))
    if fetch:
        wanted = default_origins(registry, origin)
        registry, report = prepare_sources(
            manifests, root, wanted, data_dir=data_dir, base_url=base_url, accept_licence=accept_licence,
            policy=policy, quiet=quiet,
        )
        if origin and set(origin) - set(report.ready):
            raise typer.BadParameter(f"not available: {', '.join(sorted(set(origin) - set(report.ready)))}",
                                     param_hint="--origin")
        origin = report.ready
        if not origin:
            raise typer.BadParameter("nothing to build: every source was skipped (see the table above)")
    summary = run_build(
        registry, out, origins=origin, licence_policy=policy, progress=not quiet, workers=workers or None, reuse=reuse,
        weak_masks=weak_masks,
    )
    reused = f" (unchanged, shards kept: {', '.join(summary.reused)})" if summary.reused else ""
    console.print(f"{summary.line()}{reused} -> {out}")


@app.command()
def stats(
    manifests: ManifestsOption = None,
    status: Annotated[str, typer.Option(help="Count records with this status ('all' for every status).")] = "accepted",
    as_json: JsonOption = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw records per class by origin and by licence into this PNG (needs daad[eval]).")] = None,
) -> None:
    """Counts of records per class x source x licence (near copies marked by `daad dedup` left out)."""
    registry = open_registry(manifests, None)
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
    if as_json:
        print(json.dumps(rows, indent=2))
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


@app.command()
def dedup(
    manifests: ManifestsOption = None,
    root: RootOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report the marks; write nothing.")] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Mark records that are near copies (any rotation or mirror, crops, re-encoding) of
    another origin's record with duplicate_of; builds and views leave them out."""
    from daad.registry.dedup import dedup as run_dedup

    report = run_dedup(open_registry(manifests, root), dry_run=dry_run, progress=not quiet)
    duplicates = report.duplicates()
    if as_json:
        console.print_json(json.dumps({
            "records": dict(sorted(report.records.items())),
            "duplicates": [{"origin": o, "of": k, "records": n} for (o, k), n in sorted(duplicates.items())],
            "unchecked": len(report.unchecked),
            "added": report.added, "removed": report.removed, "written": report.written,
        }))
        return
    table = Table(title="dedup" + (" (dry run: nothing written)" if dry_run else ""))
    for col in ("origin", "records", "duplicates", "of origin", "unchecked"):
        table.add_column(col, justify="left" if col in ("origin", "of origin") else "right")
    unchecked = Counter(rid.split("/", 1)[0] for rid in report.unchecked)
    for origin, n in sorted(report.records.items()):
        of = Counter({k: c for (o, k), c in duplicates.items() if o == origin})
        table.add_row(origin, str(n), str(sum(of.values())), ", ".join(f"{k} {c}" for k, c in sorted(of.items())),
                      str(unchecked[origin]))
    console.print(table)
    for rid, why in sorted(report.unchecked.items())[:10]:
        console.print(f"unchecked {rid}: {why}", highlight=False)
    if len(report.unchecked) > 10:
        console.print(f"... and {len(report.unchecked) - 10} more unchecked (pass --root ORIGIN=PATH)")
    verb = "would change" if dry_run else "changed"
    console.print(f"{verb}: {report.added} mark(s) set, {report.removed} cleared; "
                  f"manifests written: {', '.join(report.written) or 'none'}")
