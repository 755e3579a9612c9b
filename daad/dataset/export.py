"""A generated dataset exported to the folder layouts other tools train with.

- ``mvtec``: ``<category>/train/good/`` (the target normals, when given),
  ``<category>/test/<class>/<stem>.png`` and ``<category>/ground_truth/<class>/<stem>_mask.png``:
  MVTec AD's tree, read by anomalib's ``MVTecAD`` and by ``daad eval --eval mvtec-layout``.
- ``anomalib-folder``: ``normal/``, ``abnormal/<stem>.png`` and ``mask/<stem>.png`` (the same
  stems): anomalib's ``Folder`` datamodule with ``normal_dir="normal"``,
  ``abnormal_dir="abnormal"``, ``mask_dir="mask"``.
- ``imagefolder``: ``<class>/<stem>.png`` and ``masks/<class>/<stem>.png``: torchvision's
  ``ImageFolder`` and the Hub's ``imagefolder``.

Images and masks are the generated PNG bytes, written as they are (masks 0/255); target
normals are copied byte for byte. ``provenance.csv`` names, for every file, the row, its
generator, its target and the real anomalies it used, and ``README.md`` says what the
export is. The export is written beside ``out`` and renamed into place: it is whole or absent.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from daad.errors import DaadError
from daad.synthesis.output import generator_info
from daad.synthesis.targets import folder_items
from daad.taxonomy import ANOMALY_CLASSES

FORMATS = ("mvtec", "anomalib-folder", "imagefolder")
PROVENANCE_COLUMNS = ("file", "kind", "row_id", "generator", "target_id", "source_ids")


class ExportError(DaadError):
    """An export that cannot be made (unknown format, output exists, not a generated dataset)."""


def export_generated(generated: Path, out: Path, fmt: str, *, targets: Path | None = None, category: str = "daad") -> int:
    """Write generated dataset ``generated`` in layout ``fmt`` at ``out``; returns the anomalous images written."""
    generated, out = Path(generated), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if out.exists():
        raise ExportError(f"{out} exists: choose a new --out (an export never writes into an existing folder)")
    shards = sorted((generated / "data").glob("*.parquet"))
    if not shards:
        raise ExportError(f"{generated} holds no generated shards (data/*.parquet): is it a `daad synth` output?")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        provenance = []
        for tid, path in folder_items(targets) if targets is not None else []:
            dest = _normal_path(fmt, category, tid, path.suffix)
            _write(tmp / dest, path.read_bytes())
            provenance.append((dest, "normal", "", "", tid, ""))
        rows = 0
        for shard in shards:
            for row in (r for batch in pq.ParquetFile(shard).iter_batches(batch_size=64) for r in batch.to_pylist()):
                stem = row["id"].replace("/", "_")
                cls = ANOMALY_CLASSES[row["anomaly_class"]]
                image, mask = _anomaly_paths(fmt, category, cls, stem)
                _write(tmp / image, row["image"]["bytes"])
                _write(tmp / mask, row["mask"]["bytes"])
                sources = " ".join(row["source_ids"])
                provenance += [(image, "image", row["id"], row["generator"], row["target_id"], sources),
                               (mask, "mask", row["id"], row["generator"], row["target_id"], sources)]
                rows += 1
        with open(tmp / "provenance.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(PROVENANCE_COLUMNS)
            writer.writerows(provenance)
        (tmp / "README.md").write_text(_readme(generated, fmt, category, rows, targets), encoding="utf-8")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def _normal_path(fmt: str, category: str, target_id: str, suffix: str) -> str:
    stem = target_id.replace("/", "_").rsplit(".", 1)[0]
    return {
        "mvtec": f"{category}/train/good/{stem}{suffix}",
        "anomalib-folder": f"normal/{stem}{suffix}",
        "imagefolder": f"good/{stem}{suffix}",
    }[fmt]


def _anomaly_paths(fmt: str, category: str, cls: str, stem: str) -> tuple[str, str]:
    return {
        "mvtec": (f"{category}/test/{cls}/{stem}.png", f"{category}/ground_truth/{cls}/{stem}_mask.png"),
        "anomalib-folder": (f"abnormal/{stem}.png", f"mask/{stem}.png"),
        "imagefolder": (f"{cls}/{stem}.png", f"masks/{cls}/{stem}.png"),
    }[fmt]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _readme(generated: Path, fmt: str, category: str, rows: int, targets: Path | None) -> str:
    try:
        info = json.dumps(generator_info(generated), indent=2, sort_keys=True)
    except FileNotFoundError:
        info = "{}"
    return "\n".join([
        f"# {generated.name} as `{fmt}`",
        "",
        f"Exported by `daad export` from the generated dataset `{generated}`: {rows} pseudo-anomalies "
        "(PNG, masks 0/255)" + (f" and the target normals of `{targets}`" if targets else "") + ".",
        f"Layout: see daad's `daad/dataset/export.py` (`{fmt}`" + (f", category `{category}`" if fmt == "mvtec" else "") + ").",
        "`provenance.csv` names, for every file, its row, generator, target image and the real anomalies it used.",
        "",
        "Generator, parameters, seed, and the evaluation dataset it is leak-free for:",
        "",
        "```json",
        info,
        "```",
        "",
    ])
