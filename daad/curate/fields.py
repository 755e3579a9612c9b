"""The FiftyOne sample fields curators edit, and reading the mask files they draw."""

from __future__ import annotations

from pathlib import Path

import cv2

MASK_FIELD = "ground_truth"
CLASS_FIELD = "anomaly_class"


def read_mask_file(path: Path | str):
    """A mask file (any greyscale/colour image; non-zero is anomaly) as a 0/1 array."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise FileNotFoundError(f"cannot read mask file {path}")
    return (mask != 0).astype("uint8")
