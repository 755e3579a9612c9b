"""``daad curate open|sync``: curation in the FiftyOne App (extra ``curate``)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import EXIT_OK, EXIT_PROBLEMS, app, console, open_registry, output, print_json
from daad.cli.options import (
    ClassesOption, EvalOption, ManifestsOption, OriginsOption, RootOption, check_values, checked_classes, checked_origins,
    checked_statuses,
)

curate_app = typer.Typer(help="Curate records in the FiftyOne App and sync decisions back.", no_args_is_help=True)
app.add_typer(curate_app, name="curate")

NameOption = Annotated[str | None, typer.Option("--name", help="FiftyOne dataset name (default: daad).")]
DiscardOption = Annotated[bool, typer.Option(
    "--discard-unsynced", help="Drop curators' edits that are not synced (otherwise they are kept and named).")]
DatabaseOption = Annotated[
    Path | None,
    typer.Option("--database-dir", help="FiftyOne database folder (default: $DAAD_FIFTYONE_DIR or ~/.cache/daad/fiftyone)."),
]


@curate_app.command("open")
def open_(
    origin: OriginsOption = None,
    classes: ClassesOption = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="Only these sources.")] = None,
    licence: Annotated[list[str] | None, typer.Option("--licence", help="Only these licences.")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="Only these statuses (default: all).")] = None,
    evaluation: EvalOption = "none",
    generated: Annotated[Path | None, typer.Option("--generated", help="Open a generated dataset folder instead.")] = None,
    name: NameOption = None,
    port: Annotated[int, typer.Option("--port", help="App port on 127.0.0.1.")] = 5151,
    no_app: Annotated[bool, typer.Option("--no-app", help="Only prepare the FiftyOne dataset.")] = False,
    database_dir: DatabaseOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    discard_unsynced: DiscardOption = False,
) -> None:
    """Load records (or a generator's output) into FiftyOne and serve the App."""
    from daad.curate.app import launch_app
    from daad.curate.dataset import DEFAULT_NAME, open_generated, open_records
    from daad.curate.session import CurationSession
    from daad.taxonomy import Source, Status

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # every way out stops the App and mongod
        signal.signal(sig, _interrupt)
    with CurationSession(database_dir) as session:
        if generated is not None:
            dataset, summary = open_generated(session, generated, name)
        else:
            registry = open_registry(manifests, root)
            checked_statuses(status)
            check_values(source, [str(s) for s in Source], "--source")
            view = registry.view(
                evaluation=evaluation, classes=checked_classes(classes), licences=licence,
                origins=checked_origins(registry, origin), sources=source,
                statuses=status or tuple(Status),
            )
            dataset, summary = open_records(
                session, registry, view, name or DEFAULT_NAME, discard_unsynced=discard_unsynced)
        console.print(
            f"FiftyOne dataset [bold]{summary.name}[/]: {summary.samples} samples "
            f"(added {summary.added}, refreshed {summary.refreshed}, kept {summary.kept}, removed {summary.removed})",
            soft_wrap=True,
        )
        for reason in summary.skipped[:20]:
            console.print(f"[yellow]skipped[/] {reason}", highlight=False)
        if output.json:
            print_json({"name": summary.name, "samples": summary.samples, "added": summary.added,
                        "refreshed": summary.refreshed, "kept": summary.kept, "removed": summary.removed,
                        "skipped": summary.skipped})
        if no_app:
            return
        server = launch_app(session, dataset.name, port)
        console.print(f"FiftyOne App: {server.url}  (Ctrl-C to stop)", soft_wrap=True)
        try:
            while server.process.is_running():
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@curate_app.command("sync")
def sync_(
    name: NameOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the changes without writing.")] = False,
    who: Annotated[str | None, typer.Option("--who", help="Curator name for the log (default: $DAAD_CURATOR or the user).")] = None,
    database_dir: DatabaseOption = None,
    manifests: ManifestsOption = None,
    discard_unsynced: DiscardOption = False,
) -> None:
    """Write the curators' decisions into the manifests; exit 1 when there are conflicts."""
    from daad.curate.dataset import DEFAULT_NAME
    from daad.curate.session import CurationSession
    from daad.curate.sync import sync

    with CurationSession(database_dir) as session:
        report = sync(session, name or DEFAULT_NAME, manifests_dir=manifests, dry_run=dry_run, who=who,
                      discard_unsynced=discard_unsynced)
    if output.json:
        print_json(report.to_json())
    else:
        for line in report.lines():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        verb = "would apply" if dry_run else "applied"
        console.print(
            f"{verb} {len(report.changes)} change(s); {len(report.conflicts)} conflict(s); {report.unchanged} unchanged",
            soft_wrap=True,
        )
        if report.conflicts and not report.discarded:
            console.print(
                f"the edits in conflict are kept in the dataset; to redo them on the current records, run "
                f"`daad curate sync --name {name or DEFAULT_NAME} --discard-unsynced`, then `daad curate open` again",
                soft_wrap=True)
    raise typer.Exit(EXIT_PROBLEMS if report.conflicts and not report.discarded else EXIT_OK)
