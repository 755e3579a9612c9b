"""``daad build``: the Hugging Face dataset folder from the manifests (downloading the open sources first)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import app, console, open_registry, output, print_json
from daad.cli.options import ManifestsOption, OriginsOption, RootOption, WorkersOption, checked_origins
from daad.cli.download import (
    AcceptLicenceOption, BaseUrlOption, DataDirOption, LicencePolicyOption, default_origins, prepare_sources,
)

@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Output folder (load it with load_dataset(path)).")] = Path("build/daad"),
    manifests: ManifestsOption = None,
    root: RootOption = None,
    origin: OriginsOption = None,
    fetch: Annotated[bool, typer.Option(
        "--download/--no-download", help="Download the open sources that have no root first (default), "
        "and build the origins that are then on disk.")] = True,
    data_dir: DataDirOption = None,
    base_url: BaseUrlOption = None,
    accept_licence: AcceptLicenceOption = None,
    licence_policy: LicencePolicyOption = "all",
    workers: WorkersOption = 0,
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
    checked_origins(registry, origin)
    policy = LicencePolicy.parse(licence_policy, LicenceCatalogue.load(registry.manifests_dir))
    if fetch:
        wanted = default_origins(registry, origin)
        registry, report = prepare_sources(
            manifests, root, wanted, data_dir=data_dir, base_url=base_url, accept_licence=accept_licence,
            policy=policy, quiet=output.quiet,
        )
        if origin and set(origin) - set(report.ready):
            raise typer.BadParameter(f"not available: {', '.join(sorted(set(origin) - set(report.ready)))}",
                                     param_hint="--origin")
        origin = report.ready
        if not origin:
            raise typer.BadParameter("nothing to build: every source was skipped (see the table above)")
    summary = run_build(
        registry, out, origins=origin, licence_policy=policy, progress=output.progress, workers=workers or None, reuse=reuse,
        weak_masks=weak_masks,
    )
    reused = f" (unchanged, shards kept: {', '.join(summary.reused)})" if summary.reused else ""
    console.print(f"{summary.line()}{reused} -> {out}")
    if output.json:
        print_json(summary.to_json() | {"out": str(out), "reused": summary.reused})
