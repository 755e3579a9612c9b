"""CrackForest: urban road surface cracks.

155 RGB 480x320 images (``image/NNN.jpg``); 118 of them (001-118) annotated in the
Berkeley ``.seg`` format (``seg/NNN.seg``) and as MATLAB ``groundTruth/NNN.mat`` (a
``groundTruth`` struct whose ``Segmentation`` labels background 1 and cracks 2..k). The
other images carry no annotation and are reported as skipped. Road images show no
defect-free areas by design, so no normal images are yielded.

License:
    "The dataset is made available for non-commercial research purposes only"
    (README of https://github.com/cuilimeng/CrackForest-dataset). Recorded as
    ``LicenseRef-CrackForest-NonCommercial``.

Reference:
    Shi, Y., Cui, L., Qi, Z., Meng, F., Chen, Z. "Automatic road crack detection using
    random structured forests." IEEE T-ITS 17(12), 2016. Cui, L. et al. "Pavement
    Distress Detection Using Random Decision Forests." ICDS 2015.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io

from daad.annotations.berkeley_seg import SegFormatError, foreground
from daad.registry.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "crackforest"
NATIVE_LABEL = "crack"
IMAGE_DIR, SEG_DIR, MAT_DIR = "image", "seg", "groundTruth"


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per annotated image; unannotated images are yielded as ``Skipped``."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for image_path in sorted((root / IMAGE_DIR).glob("*.jpg")):
        seg_path = root / SEG_DIR / f"{image_path.stem}.seg"
        if not seg_path.is_file():
            yield Skipped(f"{ORIGIN}/{image_path.stem}", image_path, "no_annotation", f"{seg_path} missing")
            continue
        try:
            mask = foreground(seg_path)
        except SegFormatError as exc:
            yield Skipped(f"{ORIGIN}/{image_path.stem}", seg_path, "bad_annotation", str(exc))
            continue
        yield record_or_skip(entry, image_path.stem, NATIVE_LABEL, image_path, root, mask, mask_path=seg_path)


def mat_mask(root: Path, stem: str) -> np.ndarray:
    """The crack mask from ``groundTruth/<stem>.mat`` (an independent reading of the same annotation)."""
    truth = scipy.io.loadmat(Path(root) / MAT_DIR / f"{stem}.mat")["groundTruth"][0, 0]
    return (truth["Segmentation"] > 1).astype(np.uint8)


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """CrackForest publishes no defect-free images."""
    return iter(())
