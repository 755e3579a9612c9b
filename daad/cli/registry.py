"""Registry commands: ingest, validate, build, stats, sources."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import JsonOption, ManifestsOption, QuietOption, RootOption, app, console, open_registry
from daad.cli.download import (
    AcceptLicenceOption, BaseUrlOption, DataDirOption, LicencePolicyOption, prepare_sources,
)


@app.command()
def ingest(
    origin: Annotated[str, typer.Argument(help="Origin id, e.g. sd_saliency_900.")],
    root: Annotated[Path, typer.Option("--root", help="The origin's folder as its authors publish it.")],
    manifests: ManifestsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read a source with its loader and write manifests/<origin>.jsonl (curation kept)."""
    from daad.catalogue import Catalogue
    from daad.ingest import ingest as run_ingest
    from daad.loaders import get_loader

    registry = open_registry(manifests, None)
    entry = Catalogue.load(registry.manifests_dir)[origin]
    report = run_ingest(
        get_loader(origin).iter_records(root, entry), registry.manifests_dir / f"{origin}.jsonl"
    )
    if as_json:
        console.print_json(json.dumps(report.to_json()))
        return
    table = Table(title=f"ingest {origin}")
    for col in ("records", "added", "removed", "changed", "unchanged"):
        table.add_column(col, justify="right")
    table.add_row(*(str(report.to_json()[c]) for c in ("records", "added", "removed", "changed", "unchanged")))
    console.print(table)
    for reason, n in sorted(report.skipped.items()):
        console.print(f"skipped {n}: {reason}")
    for label, n in sorted(report.unmapped.items()):
        console.print(f"unmapped native class {label!r}: {n} record(s) (kept in the manifest, not built)")
    console.print("manifest written" if report.written else "manifest unchanged")


@app.command()
def validate(
    manifests: ManifestsOption = None,
    root: RootOption = None,
    origin: Annotated[list[str] | None, typer.Option("--origin", help="Only these origins.")] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Check every record against its file; exit 1 when anything is rejected."""
    from daad.validate import validate as run_validate

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
    out: Annotated[Path, typer.Option("--out", help="Output folder (load it with load_dataset(path)).")] = Path("daad"),
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
) -> None:
    """Build the Hugging Face dataset folder from the manifests, deterministically and atomically."""
    from daad.build import build as run_build
    from daad.licences import LicenceCatalogue, LicencePolicy

    package = Path(__file__).resolve().parents[1]
    if out.resolve().is_relative_to(package):
        raise typer.BadParameter(f"refusing to write into the daad package folder {package}", param_hint="--out")
    registry = open_registry(manifests, root)
    policy = LicencePolicy.parse(licence_policy, LicenceCatalogue.load(registry.manifests_dir))
    if fetch:
        wanted = origin or [p.stem for p in registry.manifests()]
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
        registry, out, origins=origin, licence_policy=policy, progress=not quiet, workers=workers or None, reuse=reuse
    )
    reused = f" (unchanged, shards kept: {', '.join(summary.reused)})" if summary.reused else ""
    console.print(f"{summary.line()}{reused} -> {out}")


@app.command()
def stats(
    manifests: ManifestsOption = None,
    status: Annotated[str, typer.Option(help="Count records with this status ('all' for every status).")] = "accepted",
    as_json: JsonOption = False,
) -> None:
    """Counts of records per class x source x licence (near copies marked by `daad dedup` left out)."""
    registry = open_registry(manifests, None)
    counts: Counter = Counter()
    duplicates = 0
    for record in registry.records():
        if status == "all" or record.status == status:
            if record.duplicate_of is not None:
                duplicates += 1
                continue
            counts[(record.anomaly_class, str(record.source), record.licence)] += 1
    rows = [{"anomaly_class": c, "source": s, "licence": lic, "records": n} for (c, s, lic), n in sorted(counts.items())]
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
    from daad.catalogue import Catalogue

    catalogue = Catalogue.load(open_registry(manifests, None).manifests_dir)
    if as_json:
        print(json.dumps([
            {"id": e.id, "name": e.name, "licence": e.licence, "homepage": e.homepage,
             "classes": e.classes, "download": e.download.url if e.download else None}
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
            "yes" if e.download else ("manual" if e.manual_download else "-"),
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
    from daad.dedup import dedup as run_dedup

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
