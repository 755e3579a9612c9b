"""``daad download``: fetch, verify and unpack the openly published sources (also run by ``daad build``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import app, console, output, print_json, root_options
from daad.cli.options import ManifestsOption, OriginsOption, RootOption, checked_origins
from daad.errors import DaadError
from daad.licences import LicenceCatalogue, LicencePolicy

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where sources are unpacked (default: $DAAD_DATA_DIR or ~/.cache/daad/data)."),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="Fetch archives from this mirror instead (default: $DAAD_DOWNLOAD_BASE_URL)."),
]
AcceptLicenceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--accept-licence",
        help="Accept this licence id (repeatable), e.g. CC-BY-NC-SA-4.0; also $DAAD_ACCEPT_LICENCES "
        "or accept_licences in ~/.config/daad/config.toml.",
    ),
]
LicencePolicyOption = Annotated[
    str,
    typer.Option("--licence-policy", help="all, research, commercial, redistributable, or licence ids (comma-separated): "
                 "sources outside it are neither downloaded nor built."),
]


class DownloadFailedError(DaadError):
    """One or more sources could not be prepared (each named with its reason)."""


def prepare_sources(
    manifests: Path | None,
    root: list[str] | None,
    origins: Iterable[str] | None,
    *,
    data_dir: Path | None,
    base_url: str | None,
    accept_licence: list[str] | None,
    policy: LicencePolicy,
    quiet: bool,
    as_json: bool = False,
):
    """Run the download-and-prepare step, print its summary table, and return (registry, report)."""
    from daad.sources.archive_sources import PrepareOptions, accepted_licences, prepare
    from daad.registry import Registry
    from daad.registry.roots import Roots, data_dir as default_data_dir

    explicit = root_options(root)
    data = (data_dir or default_data_dir()).expanduser().resolve()
    registry = Registry(manifests, Roots(explicit, data=data))
    options = PrepareOptions(
        data=data, accepted=accepted_licences(accept_licence or ()), policy=policy,
        base_url=base_url, progress=output.progress,
    )
    report = prepare(registry, origins, options)
    if output.json:
        print_json(report.to_json())
    else:
        table = Table(title=f"sources in {data}")
        for col in ("origin", "status", "detail"):
            table.add_column(col)
        colours = {"present": "green", "downloaded": "green", "skipped": "yellow", "failed": "red"}
        for o in report.outcomes:
            copies = f"; {o.duplicates} near copies of other records marked (`daad dedup`)" if o.duplicates else ""
            table.add_row(o.origin, f"[{colours[o.status]}]{o.status}[/]", o.detail + copies)
        console.print(table)
    if report.failed:
        raise DownloadFailedError("; ".join(f"{o.origin}: {o.detail}" for o in report.failed))
    return registry, report


def default_origins(registry, given: list[str] | None) -> list[str]:
    """The given origins, else every origin with a manifest or an open download."""
    if given:
        return list(given)
    with_manifest = {p.stem for p in registry.manifests()}
    downloadable = {e.id for e in registry.catalogue if e.download is not None}
    return sorted(with_manifest | downloadable)


@app.command()
def download(
    origin: OriginsOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    data_dir: DataDirOption = None,
    base_url: BaseUrlOption = None,
    accept_licence: AcceptLicenceOption = None,
    licence_policy: LicencePolicyOption = "all",
) -> None:
    """Download, verify (sha256 of every image in the manifests) and unpack the openly published sources."""
    from daad.registry import Registry

    registry = Registry(manifests)
    checked_origins(registry, origin)
    policy = LicencePolicy.parse(licence_policy, LicenceCatalogue.load(registry.manifests_dir))
    prepare_sources(
        manifests, root, default_origins(registry, origin), data_dir=data_dir, base_url=base_url,
        accept_licence=accept_licence, policy=policy, quiet=output.quiet, as_json=output.json,
    )
