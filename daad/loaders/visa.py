"""VisA (Visual Anomaly): 12 categories of complex objects, PCBs and food.

Published layout: ``<category>/Data/Images/{Normal,Anomaly}/NNNN.JPG`` and
``<category>/Data/Masks/Anomaly/NNNN.png`` whose values are small integers (one per
defect instance: 1, 2 ...), not 255; plus ``split_csv/1cls.csv`` (columns ``object,
split, label, image, mask``; paths relative to the root) giving the one-class split.
Ids ``visa/<category>/<stem>``; the native label is the category (the split file gives
no defect type; the catalogue map is per category).

License:
    CC BY 4.0 (https://github.com/amazon-science/spot-diff, LICENSE-DATASET).

Reference:
    Zou, Y., Jeong, J., Pemula, L., Zhang, D., Dabeer, O. "SPot-the-Difference
    Self-Supervised Pre-training for Anomaly Detection and Segmentation." ECCV 2022.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from daad.annotations.bitmap import read_mask
from daad.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record
from daad.roots import resolve_in_root

ORIGIN = "visa"
CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
    "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
)
SPLIT_CSV = "split_csv/1cls.csv"


def _rows(root: Path) -> Iterator[dict[str, str]]:
    with open(root / SPLIT_CSV, newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


def _native_id(row: dict[str, str]) -> str:
    return f"{row['object']}/{PurePosixPath(row['image']).stem}"


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per ``anomaly`` row of ``split_csv/1cls.csv`` with its mask (values > 0)."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for row in _rows(root):
        if row["label"] != "anomaly":
            continue
        native_id = _native_id(row)
        image_path = resolve_in_root(root, row["image"], f"{ORIGIN}/{native_id}")
        if not row.get("mask"):
            yield Skipped(f"{ORIGIN}/{native_id}", image_path, "no_annotation", "no mask in the split file")
            continue
        mask_path = resolve_in_root(root, row["mask"], f"{ORIGIN}/{native_id}")
        if not mask_path.is_file():
            yield Skipped(f"{ORIGIN}/{native_id}", image_path, "no_annotation", f"{mask_path} missing")
            continue
        yield record_or_skip(entry, native_id, row["object"], image_path, root, read_mask(mask_path, threshold=0),
                             mask_path=mask_path, split=row["split"])


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """Every ``normal`` row of the split file, with its split."""
    root = Path(root)
    for row in _rows(root):
        if row["label"] == "normal":
            rid = f"{ORIGIN}/{_native_id(row)}"
            yield NormalImage(rid, resolve_in_root(root, row["image"], rid), row["split"])
