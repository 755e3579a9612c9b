"""VisA (Visual Anomaly): 12 categories of complex objects, PCBs and food.

Published as ``VisA_20220922.tar`` (https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/
VisA_20220922.tar), unpacked as it is: ``<category>/Data/Images/{Normal,Anomaly}/NNNN.JPG``,
``<category>/Data/Masks/Anomaly/NNN.png`` (small integer values, one per defect type of the
category as ``utils/id2class.py`` of spot-diff numbers them, not 255),
``<category>/image_anno.csv`` (columns ``image, label, mask``; ``label`` is ``normal`` or the
image's defect names, comma-separated: ``"melt,scratch"``) and ``split_csv/1cls.csv``
(columns ``object, split, label, image, mask``; paths relative to the root) giving the
one-class split.

Records: one per ``anomaly`` row of the split file, id ``visa/<category>/<stem>``, its mask
every non-zero pixel. Classes are mapped per defect: the catalogue maps ``<category>/<defect>``
(``pcb1/melt``, ``candle/foreign particals on candle``, spelled as the CSV spells them). An
image whose defects all map to one DAAD class gets that class. An image whose defects map to
different classes (or to ``unmapped``) is split into one record per defect,
``visa/<category>/<stem>/<defect>``, its mask the pixels of that defect's value, when the
mask's values are exactly those the catalogue's ``layout.mask_values`` (spot-diff's
``id2class``) gives its named defects; otherwise it stays one ``unmapped`` record, because
its one mask covers them all. The native label is ``<category>/<defect>[,<defect>...]``
(names lower-cased, sorted).

License:
    CC BY 4.0 (https://github.com/amazon-science/spot-diff, LICENSE-DATASET: "The data is
    released under the CC BY 4.0 license"); commercial use allowed, with attribution.

Reference:
    Zou, Y., Jeong, J., Pemula, L., Zhang, D., Dabeer, O. "SPot-the-Difference
    Self-Supervised Pre-training for Anomaly Detection and Segmentation." ECCV 2022.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from daad.registry.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record
from daad.registry.roots import resolve_in_root
from daad.taxonomy import UNMAPPED

ORIGIN = "visa"
CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
    "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
)
SPLIT_CSV = "split_csv/1cls.csv"
ANNOTATIONS_CSV = "image_anno.csv"
NORMAL = "normal"
_SPACES = re.compile(r"\s+")


def _read_csv(path: Path) -> Iterator[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            yield {(k or "").strip(): (v or "").strip() for k, v in row.items()}


def _name(text: str) -> str:
    return _SPACES.sub(" ", text.strip().lower())


def defect_names(label: str) -> tuple[str, ...]:
    """The defect names of an ``image_anno.csv`` label, lower-cased, deduplicated, sorted."""
    return tuple(sorted({_name(part) for part in label.split(",")} - {"", NORMAL}))


def _defects_by_image(root: Path, category: str) -> dict[str, tuple[str, ...]]:
    """Image path (as the CSVs write it) -> its defect names, from ``<category>/image_anno.csv``."""
    path = root / category / ANNOTATIONS_CSV
    if not path.is_file():
        return {}
    return {PurePosixPath(row["image"]).as_posix(): defect_names(row.get("label", "")) for row in _read_csv(path)}


def anomaly_class(entry: SourceEntry, category: str, defects: tuple[str, ...]) -> tuple[str, str | None]:
    """The DAAD class of one image's defects, and a note when it is ``unmapped`` for want of one class."""
    unknown = [d for d in defects if f"{category}/{d}" not in entry.classes]
    if unknown:
        return UNMAPPED, f"defect name(s) not in the catalogue: {', '.join(unknown)}"
    classes = {entry.classes[f"{category}/{d}"] for d in defects}
    if len(classes) == 1:
        return classes.pop(), None
    return UNMAPPED, f"one mask covers defects of classes {', '.join(sorted(classes))}"


def _mask_values(path: Path) -> np.ndarray:
    """The mask as published: its values (defect ids), not a grey rendering of a palette."""
    with Image.open(path) as image:
        return np.asarray(image if image.mode in ("L", "P") else image.convert("L"))


def split_by_value(
    entry: SourceEntry, category: str, defects: tuple[str, ...], values: np.ndarray
) -> list[tuple[str, np.ndarray]] | None:
    """One ``(defect, 0/1 mask)`` per named defect, when the mask's non-zero values are exactly
    the ids ``layout.mask_values`` gives those defects (and each is in the catalogue); else ``None``."""
    names = [_name(n) for n in (entry.layout or {}).get("mask_values", {}).get(category, ())]
    ids = {name: k for k, name in enumerate(names, start=1)}
    if not all(d in ids and f"{category}/{d}" in entry.classes for d in defects):
        return None
    if set(np.unique(values).tolist()) - {0} != {ids[d] for d in defects}:
        return None
    return [(d, (values == ids[d]).astype(np.uint8)) for d in defects]


def _native_id(row: dict[str, str]) -> str:
    return f"{row['object']}/{PurePosixPath(row['image']).stem}"


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per ``anomaly`` row of ``split_csv/1cls.csv`` with its mask (values > 0)."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    defects: dict[str, dict[str, tuple[str, ...]]] = {}
    for row in _read_csv(root / SPLIT_CSV):
        if row["label"] != "anomaly":
            continue
        category = row["object"]
        native_id = _native_id(row)
        rid = f"{entry.id}/{native_id}"
        image_path = resolve_in_root(root, row["image"], rid)
        if category not in defects:
            defects[category] = _defects_by_image(root, category)
        names = defects[category].get(PurePosixPath(row["image"]).as_posix(), ())
        if not names:
            yield Skipped(rid, image_path, "no_defect_label", f"no defect named for it in {category}/{ANNOTATIONS_CSV}")
            continue
        mask_path = resolve_in_root(root, row["mask"], rid) if row.get("mask") else None
        if mask_path is None or not mask_path.is_file():
            yield Skipped(rid, image_path, "no_annotation", f"mask {row.get('mask') or '(none named)'} missing")
            continue
        cls, note = anomaly_class(entry, category, names)
        values = _mask_values(mask_path)
        parts = split_by_value(entry, category, names, values) if cls == UNMAPPED and len(names) > 1 else None
        for name, part in parts or ():
            yield record_or_skip(entry, f"{native_id}/{name.replace(' ', '_')}", f"{category}/{name}", image_path,
                                 root, part, mask_path=mask_path, split=row["split"],
                                 note=f"one of {len(names)} defects of {rid}, split from its mask by value")
        if parts is None:
            yield record_or_skip(entry, native_id, f"{category}/{','.join(names)}", image_path, root,
                                 (values > 0).astype(np.uint8), mask_path=mask_path, split=row["split"],
                                 note=note, anomaly_class=cls)


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """Every ``normal`` row of the split file, with its split."""
    root = Path(root)
    for row in _read_csv(root / SPLIT_CSV):
        if row["label"] == NORMAL:
            rid = f"{ORIGIN}/{_native_id(row)}"
            yield NormalImage(rid, resolve_in_root(root, row["image"], rid), row["split"])
