"""Source commands: ``daad fetch`` (images of URL records into the local cache)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import JsonOption, ManifestsOption, QuietOption, app, console, open_registry


@app.command()
def fetch(
    manifests: ManifestsOption = None,
    origin: Annotated[list[str] | None, typer.Option("--origin", help="Only these origins.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Parallel downloads.")] = 8,
    max_mb: Annotated[float, typer.Option("--max-mb", min=0.001, help="Size cap per image, MiB.")] = 20.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per attempt.")] = 20.0,
    retries: Annotated[int, typer.Option(min=0, help="Extra attempts after a timeout or server error.")] = 2,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many records per origin.")] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Download the images of URL records, pin their sha256 in the manifest, record failures; exit 1 when all failed."""
    from daad.sources.url_images import fetch as run_fetch

    report = run_fetch(
        open_registry(manifests, None).manifests_dir, origin, concurrency=concurrency,
        max_bytes=int(max_mb * 1024 * 1024), timeout=timeout, retries=retries, limit=limit,
        progress=not (quiet or as_json),
    )
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report)
    if report.all_failed:
        raise typer.Exit(1)


def _print_report(report) -> None:
    from daad.sources.url_images import NETWORK_ERROR

    table = Table(title="fetch")
    table.add_column("result")
    table.add_column("records", justify="right")
    table.add_row("fetched", str(report.fetched))
    table.add_row("verified in cache", str(report.verified))
    for reason, n in sorted(report.failed.items()):
        table.add_row(f"failed: {reason}", str(n))
    console.print(table)
    console.print(f"manifests written: {', '.join(report.manifests_written) or 'none'}")
    if report.failed.get(NETWORK_ERROR):
        console.print(f"{report.failed[NETWORK_ERROR]} network error(s) (no answer: offline, DNS, refused, timeout, "
                      "server error): nothing recorded for them; run `daad fetch` again when the network is back")

