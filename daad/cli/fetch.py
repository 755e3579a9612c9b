"""Source commands: ``daad fetch`` (images of URL records into the local cache)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import EXIT_PROBLEMS, app, console, open_registry, output, print_json
from daad.cli.options import ManifestsOption, OriginsOption, checked_origins


@app.command()
def fetch(
    manifests: ManifestsOption = None,
    origin: OriginsOption = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Parallel downloads.")] = 8,
    max_mb: Annotated[float, typer.Option("--max-mb", min=0.001, help="Size cap per image, MiB.")] = 20.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per attempt.")] = 20.0,
    retries: Annotated[int, typer.Option(min=0, help="Extra attempts after a timeout or server error.")] = 2,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many records per origin.")] = None,
) -> None:
    """Download the images of URL records, pin their sha256 in the manifest, record failures; exit 1 when all failed."""
    from daad.sources.url_images import fetch as run_fetch

    registry = open_registry(manifests, None)
    report = run_fetch(
        registry.manifests_dir, checked_origins(registry, origin), concurrency=workers,
        max_bytes=int(max_mb * 1024 * 1024), timeout=timeout, retries=retries, limit=limit,
        progress=output.progress,
    )
    if output.json:
        print_json(report.to_json())
    else:
        _print_report(report)
    if report.all_failed:
        raise typer.Exit(EXIT_PROBLEMS)


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

