"""``daad push REPO_ID``: publish a built dataset folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daad.cli.app import ManifestsOption, app, console, open_registry
from daad.dataset.push import TIMEOUT_S, format_size, plan_push, push as run_push
from daad.licences import LicenceCatalogue


@app.command()
def push(
    repo_id: Annotated[str, typer.Argument(help="The Hub dataset repo, `namespace/name` (created if missing).")],
    folder: Annotated[Path, typer.Argument(help="The built dataset folder to publish.")] = Path("build/daad"),
    manifests: ManifestsOption = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would go (files, sizes, licences); send nothing.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Publish rows whose licence is unknown or does not grant redistribution.")] = False,
    token: Annotated[str | None, typer.Option(
        "--token", help="Hub token (default: $HF_TOKEN, else the one `hf auth login` saved).")] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=1, help="Seconds any network wait may last before the push gives up.")] = TIMEOUT_S,
) -> None:
    """Upload a build to a Hub dataset repo (HF_ENDPOINT selects a mirror), refusing rows whose licence
    does not allow republishing unless --force."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="REPO_ID") from None
    catalogue = LicenceCatalogue.load(open_registry(manifests, None).manifests_dir)
    plan = plan_push(folder, catalogue)
    if dry_run:
        _print_plan(plan, repo_id, private)
        return
    result = run_push(plan, repo_id, token=token, private=private, force=force, timeout=timeout)
    if plan.blocked:
        console.print(f"forced: {plan.blocked_line()}")
    console.print(f"pushed {len(result.committed)} file(s), {format_size(plan.size)} in {len(result.commit_urls)} "
                  f"commit(s) -> {result.repo_url}")


def _print_plan(plan, repo_id: str, private: bool) -> None:
    table = Table(title=f"would push {plan.folder} to {repo_id}" + (" (private)" if private else ""))
    table.add_column("file")
    table.add_column("size", justify="right")
    for f in plan.files:
        table.add_row(f.path, format_size(f.size))
    table.add_section()
    table.add_row(f"{len(plan.files)} files", format_size(plan.size))
    console.print(table)
    licences = Table(title="rows per licence")
    for col in ("licence", "rows", "redistribution"):
        licences.add_column(col, justify="right" if col == "rows" else "left")
    for lic, n in sorted(plan.rows.items()):
        licences.add_row(lic, str(n), "refused" if lic in plan.blocked else "yes")
    console.print(licences)
    if plan.blocked:
        console.print(f"refused without --force: {plan.blocked_line()}")
