"""NEU-Seg: hot-rolled strip steel defects with pixel masks of three classes.

4,470 RGB 200x200 JPEG images (grey content) in ``images/{training,test}/NNNNNN.jpg``
(3,630 training, 840 test; the two splits reuse numbers for other images) and one PNG
mask per image in ``annotations/{split}/NNNNNN.png`` whose pixel values are 0 (background),
1 (inclusion), 2 (patches) and 3 (scratches); 927 masks hold two or three classes.
Published in https://github.com/DHW-Master/NEU_Seg (commit da8cebe). About 3,600 of its
images are SD-saliency-900 images, many rotated by 90/180/270° or mirrored: the catalogue
says ``derived_from = ["sd_saliency_900"]`` and ``daad dedup`` marks those records
``duplicate_of`` their SD-saliency-900 record, so only NEU-Seg's new images are built.

One record per class present in a mask (``<split>/<number>/<class>``). The dataset has
no defect-free images.

License:
    None stated by the publisher (the repository holds only the data and a one-line
    README). Recorded as ``LicenseRef-NEU-Seg-unlicensed``: research use, not cleared
    for redistribution or commercial use.

Reference:
    NEU-Seg is distributed with the NEU surface defect database of Northeastern
    University (Song, K., Yan, Y. "A noise robust method based on completed local binary
    patterns for hot-rolled steel strip surface defects." Applied Surface Science 285
    (2013)); its images overlap SD-saliency-900 (Song, G., Song, K., Yan, Y., 2020).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from daad.registry.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "neu_seg"
SPLITS = ("training", "test")
IMAGE_DIR = "images"
MASK_DIR = "annotations"
MASK_VALUES = {1: "inclusion", 2: "patches", 3: "scratches"}
"""Mask pixel value -> native class."""


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per (image, class present in its mask)."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for split in SPLITS:
        for image_path in sorted((root / IMAGE_DIR / split).glob("*.jpg")):
            native_id = f"{split}/{image_path.stem}"
            mask_path = root / MASK_DIR / split / f"{image_path.stem}.png"
            if not mask_path.is_file():
                yield Skipped(f"{ORIGIN}/{native_id}", image_path, "no_annotation", f"{mask_path} missing")
                continue
            with Image.open(mask_path) as mask_image:
                mask = np.asarray(mask_image.convert("L"))
            unknown = sorted(set(np.unique(mask).tolist()) - {0, *MASK_VALUES})
            if unknown:
                yield Skipped(f"{ORIGIN}/{native_id}", mask_path, "unknown_mask_value", f"values {unknown} in {mask_path}")
                continue
            present = [v for v in MASK_VALUES if (mask == v).any()]
            if not present:
                yield Skipped(f"{ORIGIN}/{native_id}", image_path, "empty_mask", f"{mask_path} is all background")
            for value in present:
                label = MASK_VALUES[value]
                yield record_or_skip(entry, f"{native_id}/{label}", label, image_path, root, mask == value,
                                     mask_path=mask_path, split=split)


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """NEU-Seg publishes no defect-free images."""
    return iter(())
