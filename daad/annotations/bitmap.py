"""Bitmap masks as sources publish them: PNG/BMP files whose non-zero (or bright) pixels
are the anomaly, possibly several files per image (MVTec LOCO: one per defect)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image


def read_mask(path: Path, *, threshold: int = 0) -> np.ndarray:
    """``uint8`` 0/1 mask of the pixels above ``threshold`` (grey value; colour is converted).

    ``threshold=0`` suits masks with small label values (VisA: 1, 2 ...); ``127`` suits
    0/255 masks that were saved lossy.
    """
    with Image.open(path) as image:
        return (np.asarray(image.convert("L")) > threshold).astype(np.uint8)


def union(paths: Iterable[Path], *, threshold: int = 0) -> np.ndarray:
    """The union of several masks of one image (all the same size)."""
    masks = [read_mask(p, threshold=threshold) for p in paths]
    if not masks:
        raise ValueError("no mask files")
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise ValueError(f"masks differ in size: {sorted(shapes)}")
    return np.bitwise_or.reduce(masks)
