"""``daad curate annotate``: masks drawn in Label Studio (or CVAT) for records that need one (extra ``curate``)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import console, open_registry, output, print_json
from daad.cli.options import (
    ClassesOption, DeviceOption, EvalOption, ManifestsOption, OriginsOption, RootOption, check_values, checked_classes,
    checked_origins, checked_statuses,
)
from daad.cli.curate import DatabaseOption, DiscardOption, _interrupt, curate_app


@curate_app.command("annotate")
def annotate(
    context: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", help="Only these statuses (default: needs_mask; with --id: all).")] = None,
    record_id: Annotated[list[str] | None, typer.Option("--id", help="Only these record ids (e.g. masks to fix).")] = None,
    origin: OriginsOption = None,
    classes: ClassesOption = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="Only these sources.")] = None,
    licence: Annotated[list[str] | None, typer.Option("--licence", help="Only these licences.")] = None,
    evaluation: EvalOption = "none",
    load: Annotated[bool, typer.Option("--load", help="Bring finished masks back into the manifests.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --load: print the changes without writing.")] = False,
    who: Annotated[str | None, typer.Option("--who", help="Curator name for the log (default: $DAAD_CURATOR or the user).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="FiftyOne dataset name (default: daad-annotate).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="Annotation server: labelstudio (default) or cvat.")] = "labelstudio",
    cvat_url: Annotated[str | None, typer.Option("--cvat-url", help="With --backend cvat: the CVAT server (images are uploaded).")] = None,
    cvat_username: Annotated[str | None, typer.Option(
        "--cvat-username", envvar="DAAD_CVAT_USERNAME", help="CVAT username ($DAAD_CVAT_USERNAME); the password is read "
        "from $DAAD_CVAT_PASSWORD only.")] = None,
    url: Annotated[str | None, typer.Option("--label-studio-url", help="An existing Label Studio server (images are uploaded).")] = None,
    token: Annotated[str | None, typer.Option(
        "--label-studio-token", envvar="DAAD_LABEL_STUDIO_TOKEN", help="Its API token ($DAAD_LABEL_STUDIO_TOKEN).")] = None,
    executable: Annotated[Path | None, typer.Option(
        "--label-studio-bin", help="label-studio executable (default: $DAAD_LABEL_STUDIO, .venv-label-studio, PATH).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--label-studio-dir", help="Data folder of the server daad starts (default: $DAAD_LABEL_STUDIO_DIR or ~/.cache/daad/label-studio).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port of the server daad starts on 127.0.0.1 (default: a free one).")] = None,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="After sending, keep the server daad started until Ctrl-C.")] = True,
    sam_model: Annotated[Path | None, typer.Option(
        "--sam-model", help="Local SAM folder (transformers SamModel + SamProcessor, e.g. a facebook/sam-vit-base "
        "snapshot; never downloaded): a record without a mask gets SAM's mask for its box or click as a proposal.")] = None,
    prompts: Annotated[Path | None, typer.Option(
        "--prompts", help='With --sam-model: JSONL lines {"id": ID, "box": [x, y, w, h]} or {"id": ID, "point": [x, y]} '
        "(default: each record's bbox).")] = None,
    device: DeviceOption = None,
    database_dir: DatabaseOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    discard_unsynced: DiscardOption = False,
) -> None:
    """Send records to Label Studio (or CVAT) for segmentation masks, or (--load) write the finished masks back."""
    from daad.curate import cvat, labelstudio
    from daad.curate.annotate import DEFAULT_NAME
    from daad.curate.session import CurationSession
    from daad.taxonomy import Status

    cvat_password = _checked_backend(context, backend, cvat_url, cvat_username)
    if url is not None and not token:
        raise typer.BadParameter("--label-studio-url needs --label-studio-token (or $DAAD_LABEL_STUDIO_TOKEN)")
    if load and (sam_model or prompts):
        raise typer.BadParameter("proposals are made when sending; --load reads annotations only", param_hint="--sam-model")
    if prompts is not None and sam_model is None:
        raise typer.BadParameter("--prompts needs --sam-model", param_hint="--prompts")
    name = name or DEFAULT_NAME
    if not load:  # every check, the SAM model's loading too, before any server starts or is sent anything
        registry, records = _selected(manifests, root, record_id, dict(
            evaluation=evaluation, classes=classes, licences=licence, origins=origin, sources=source,
            statuses=status or (tuple(Status) if record_id else [Status.NEEDS_MASK])))
        proposer, prompt_map = _proposals(registry, sam_model, prompts, device) if sam_model else (None, None)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # every way out stops Label Studio and mongod
        signal.signal(sig, _interrupt)
    if backend == "cvat":  # before the session: an unreachable server changes nothing
        server = cvat.connect(cvat_url, cvat_username, cvat_password)
    with CurationSession(database_dir) as session:
        if backend == "labelstudio" and url is not None:
            server = labelstudio.existing(url, token)
        elif backend == "labelstudio":
            server = labelstudio.start(session, data_dir, executable=executable, port=port)
        if load:
            _load(session, server, name, manifests, dry_run, who)
        else:
            _send(session, server, name, registry, records, discard_unsynced,
                  serve and url is None and backend == "labelstudio", proposer, prompt_map)


LABEL_STUDIO_ONLY = {"url": "--label-studio-url", "token": "--label-studio-token", "executable": "--label-studio-bin",
                     "data_dir": "--label-studio-dir", "port": "--port", "serve": "--serve/--no-serve",
                     "sam_model": "--sam-model", "prompts": "--prompts"}
CVAT_ONLY = {"cvat_url": "--cvat-url", "cvat_username": "--cvat-username"}


def _checked_backend(context: typer.Context, backend: str, cvat_url: str | None, cvat_username: str | None) -> str | None:
    """Refuse (usage error) options of the other backend given on the command line, and a CVAT
    backend without its URL, username or password; returns the CVAT password."""
    if backend not in ("labelstudio", "cvat"):
        raise typer.BadParameter(f"{backend!r} is not one of labelstudio, cvat", param_hint="--backend")
    other = LABEL_STUDIO_ONLY if backend == "cvat" else CVAT_ONLY
    given = [flag for param, flag in other.items()
             if getattr(context.get_parameter_source(param), "name", None) == "COMMANDLINE"]
    if given:
        why = ("CVAT has no proposal layer and daad does not start CVAT" if backend == "cvat"
               else "they need --backend cvat")
        raise typer.BadParameter(f"{', '.join(given)} with --backend {backend}: {why}", param_hint="--backend")
    if backend == "labelstudio":
        return None
    if not cvat_url:
        raise typer.BadParameter("--backend cvat needs --cvat-url (daad does not start CVAT)", param_hint="--cvat-url")
    if not cvat_username:
        raise typer.BadParameter("--backend cvat needs --cvat-username or $DAAD_CVAT_USERNAME", param_hint="--cvat-username")
    if not os.environ.get("DAAD_CVAT_PASSWORD"):
        raise typer.BadParameter("--backend cvat reads the password from $DAAD_CVAT_PASSWORD, which is not set",
                                 param_hint="--backend")
    return os.environ["DAAD_CVAT_PASSWORD"]


def _selected(manifests, root, record_ids, filters):
    """The registry and its records the filters select."""
    from daad.taxonomy import Source

    registry = open_registry(manifests, root)
    checked_statuses(filters["statuses"])
    check_values(filters["sources"], [str(s) for s in Source], "--source")
    filters |= {"classes": checked_classes(filters["classes"]), "origins": checked_origins(registry, filters["origins"])}
    return registry, [r for r in registry.view(**filters) if not record_ids or r.id in record_ids]


def _proposals(registry, sam_model, prompts, device):
    """The SAM model and the checked prompts file (refused, naming every bad line, before the model loads)."""
    from daad.curate.proposals import SamProposer, read_prompts
    from daad.synthesis.diffusion import pick_device

    prompt_map = read_prompts(prompts, {r.id: r for r in registry.records()}) if prompts else {}
    return SamProposer.load(sam_model, str(pick_device(device))), prompt_map


def _send(session, server, name, registry, records, discard_unsynced, serve, proposer, prompts) -> None:
    from daad.curate.annotate import send

    summary = send(session, registry, records, server, name, discard_unsynced=discard_unsynced, proposer=proposer,
                   prompts=prompts)
    if output.json:
        print_json({
            "dataset": name, "samples": summary.opened.samples, "pending": summary.pending,
            "skipped": summary.opened.skipped, "url": server.url,
            "projects": [vars(p) for p in summary.projects],
            "sam_proposals": sum(p.sam_proposals for p in summary.projects),
            "unprompted": summary.unprompted, "unproposed": summary.unproposed})
    else:
        for reason in summary.opened.skipped[:20]:
            console.print(f"[yellow]skipped[/] {reason}", highlight=False)
        for reason in summary.unproposed[:20]:
            console.print(f"[yellow]no SAM proposal[/] {reason}", highlight=False)
        for p in summary.projects:
            console.print(f"{p.anomaly_class}: {p.tasks} record(s) ({p.proposals} pre-filled with the existing mask"
                          + (f", {p.sam_proposals} with a SAM proposal" if proposer else "") + f"): {p.url}",
                          soft_wrap=True, highlight=False)
        console.print(f"sent {sum(p.tasks for p in summary.projects)} record(s); {summary.pending} sent earlier "
                      f"still in {name!r}", soft_wrap=True)
        if proposer:
            console.print(f"{sum(p.sam_proposals for p in summary.projects)} task(s) got a SAM proposal; "
                          f"{len(summary.unprompted)} record(s) without a mask had no box or prompt, "
                          f"{len(summary.unproposed)} an image SAM could not read", soft_wrap=True)
        if serve and server.username:  # a daad-started Label Studio
            console.print(f"Label Studio: {server.url}  user {server.username}  password {server.password}",
                          soft_wrap=True, highlight=False)
    if serve and server.process is not None:
        console.print("annotate, then run `daad curate annotate --load` (Ctrl-C stops Label Studio)", soft_wrap=True)
        try:
            while server.process.is_running():
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def _load(session, server, name, manifests, dry_run, who) -> None:
    from daad.curate.annotate import load

    report = load(session, server, name, manifests_dir=manifests, dry_run=dry_run, who=who)
    conflicts = report.all_conflicts()
    if output.json:
        print_json({
            "loaded": report.loaded, "waiting": report.waiting, "empty": report.empty,
            "conflicts": [{"id": c.record_id, "reason": c.reason} for c in conflicts],
            "sync": report.sync.to_json()})
    else:
        for line in report.sync.lines() + [c.describe() for c in report.conflicts]:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        for record_id in report.empty:
            console.print(f"{record_id}: annotation holds no mask (reject it in `daad curate open`?)", soft_wrap=True)
        verb = "would apply" if dry_run else "applied"
        console.print(f"{len(report.loaded)} mask(s) loaded; {verb} {len(report.sync.changes)} change(s); "
                      f"{len(conflicts)} conflict(s); {report.waiting} task(s) not annotated yet", soft_wrap=True)
    raise typer.Exit(1 if conflicts else 0)
