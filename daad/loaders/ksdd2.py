"""KolektorSDD2: surface defects (scratches, spots, imperfections) on production items.

Published layout: ``train/NNNNN.png`` and ``test/NNNNN.png``, each with a same-size
``NNNNN_GT.png`` ground truth (non-zero = defect); an all-zero ground truth is a
defect-free image. Ids ``ksdd2/<split>/NNNNN``; one native label, ``defect``.

License:
    CC BY-NC-SA 4.0 (https://www.vicos.si/resources/kolektorsdd2/); not for commercial use.

Reference:
    Bozic, J., Tabernik, D., Skocaj, D. "Mixed supervision for surface-defect detection:
    from weakly to fully supervised learning." Computers in Industry 129, 2021.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daad.annotations.bitmap import read_mask
from daad.registry.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "ksdd2"
NATIVE_LABEL = "defect"
SPLITS = ("train", "test")
GT_SUFFIX = "_GT"


def _items(root: Path) -> Iterator[tuple[str, Path, Path, str]]:
    for split in SPLITS:
        for image_path in sorted((root / split).glob("*.png")):
            if not image_path.stem.endswith(GT_SUFFIX):
                gt_path = image_path.with_name(f"{image_path.stem}{GT_SUFFIX}.png")
                yield f"{split}/{image_path.stem}", image_path, gt_path, split


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per image whose ground truth is not empty."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for native_id, image_path, gt_path, split in _items(root):
        if not gt_path.is_file():
            yield Skipped(f"{ORIGIN}/{native_id}", image_path, "no_annotation", f"{gt_path} missing")
            continue
        mask = read_mask(gt_path, threshold=0)
        if mask.any():
            yield record_or_skip(entry, native_id, NATIVE_LABEL, image_path, root, mask, mask_path=gt_path, split=split)


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """Images whose ground truth is all zero."""
    root = Path(root)
    for native_id, image_path, gt_path, split in _items(root):
        if gt_path.is_file() and not read_mask(gt_path, threshold=0).any():
            yield NormalImage(f"{ORIGIN}/{native_id}", image_path, split)
