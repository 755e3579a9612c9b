"""``daad export``: a generated dataset in the folder layout another tool trains with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import app, console, output, print_json


@app.command("export")
def export(
    generated: Annotated[Path, typer.Argument(help="A generated dataset folder (the --out of `daad synth`).")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the export (never an existing one).")],
    fmt: Annotated[str, typer.Option("--format", help="mvtec, anomalib-folder or imagefolder.")] = "mvtec",
    targets: Annotated[Path | None, typer.Option(
        "--targets", help="The target normals the rows were made from, copied in as the layout's normal images.")] = None,
    category: Annotated[str, typer.Option("--category", help="Category folder name of the mvtec layout.")] = "daad",
) -> None:
    """Export a generated dataset as MVTec AD's tree, anomalib's Folder layout or an image folder."""
    from daad.dataset.export import export_generated

    rows = export_generated(generated, out, fmt, targets=targets, category=category)
    console.print(f"exported {rows} pseudo-anomalies as {fmt} -> {out} (provenance.csv names every file's origin)")
    if output.json:
        print_json({"rows": rows, "format": fmt, "out": str(out)})
