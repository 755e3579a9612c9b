"""DAGM 2007: ten synthetic texture classes with weakly labelled defects.

Published layout: ``Class<k>/{Train,Test}/NNNN.PNG`` (512x512 grey), with
``Class<k>/{Train,Test}/Label/Labels.txt`` (a count line, then one tab-separated line
per image: ``index, defective 0/1, image file, 0, label file``) and
``Label/NNNN_label.PNG``: a filled ellipse roughly around the defect. The labels are
weak (the ellipse is not the defect's outline), so records carry ``weak_mask`` (``daad build
--no-weak-masks`` leaves them out).
Ids ``dagm2007/Class<k>/<Split>/NNNN``; native label ``Class<k>``.

License:
    CC BY 4.0 (re-published by the authors on Zenodo, https://zenodo.org/records/12750201).

Reference:
    Wieler, M., Hahn, T. "Weakly Supervised Learning for Industrial Optical Inspection."
    DAGM 2007 symposium competition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from daad.annotations.bitmap import read_mask
from daad.registry.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "dagm2007"
SPLITS = ("Train", "Test")
WEAK_NOTE = "weak label: an ellipse around the defect, not its outline"


def _labels(folder: Path) -> dict[str, str | None]:
    """Image file -> label file (``None`` for a defect-free image), from ``Label/Labels.txt``."""
    labels_txt = folder / "Label" / "Labels.txt"
    if not labels_txt.is_file():  # fall back to the label files present
        named = {p.name: f"{p.stem}_label{p.suffix}" for p in sorted(folder.glob("*.PNG"))}
        return {image: (label if (folder / "Label" / label).is_file() else None) for image, label in named.items()}
    labels: dict[str, str | None] = {}
    for line in labels_txt.read_text().splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) >= 3:
            labels[fields[2].strip()] = fields[4].strip() if fields[1].strip() == "1" and len(fields) > 4 else None
    return labels


def _folders(root: Path) -> Iterator[tuple[str, str, Path]]:
    for cls in sorted(p for p in root.glob("Class*") if p.is_dir()):
        for split in SPLITS:
            if (cls / split).is_dir():
                yield cls.name, split, cls / split


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One ``weak_mask`` record per defective image, its mask the ellipse."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for cls, split, folder in _folders(root):
        for image_name, label_name in sorted(_labels(folder).items()):
            if label_name is None:
                continue
            image_path = folder / image_name
            native_id = f"{cls}/{split}/{Path(image_name).stem}"
            mask_path = folder / "Label" / label_name
            if not mask_path.is_file():
                yield Skipped(f"{ORIGIN}/{native_id}", image_path, "no_annotation", f"{mask_path} missing")
                continue
            item = record_or_skip(entry, native_id, cls, image_path, root, read_mask(mask_path, threshold=127),
                                  mask_path=mask_path, split=split.lower(), note=WEAK_NOTE)
            yield replace(item, weak_mask=True) if isinstance(item, Record) else item


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """Images that ``Labels.txt`` marks defect-free."""
    root = Path(root)
    for cls, split, folder in _folders(root):
        for image_name, label_name in sorted(_labels(folder).items()):
            if label_name is None:
                yield NormalImage(f"{ORIGIN}/{cls}/{split}/{Path(image_name).stem}", folder / image_name, split.lower())
