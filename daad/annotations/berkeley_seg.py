"""The Berkeley Segmentation Dataset ``.seg`` text format (used by CrackForest).

A header of ``key value`` lines (``width``, ``height``, ``segments``, ...; the ``image``
line may hold a Windows path of the annotator's machine), then ``data`` and one run per
line: ``segment row col_start col_end`` with inclusive columns. Segment 0 is the
background; every other segment is an annotated region.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class SegFormatError(ValueError):
    """A ``.seg`` file does not follow the format; names the file and line."""


@dataclass(frozen=True, slots=True)
class Segmentation:
    labels: np.ndarray
    """``height x width`` ``int32`` segment label per pixel."""
    header: dict[str, str]


def read_seg(path: Path) -> Segmentation:
    """Parse a ``.seg`` file into a label image."""
    path = Path(path)
    lines = path.read_text(encoding="latin-1").splitlines()
    header: dict[str, str] = {}
    for i, line in enumerate(lines):
        if line.strip() == "data":
            body_start = i + 1
            break
        key, _, value = line.partition(" ")
        header[key] = value.strip()
    else:
        raise SegFormatError(f"{path}: no 'data' line")
    try:
        width, height = int(header["width"]), int(header["height"])
    except (KeyError, ValueError):
        raise SegFormatError(f"{path}: header lacks integer width/height") from None
    rows = [line.split() for line in lines[body_start:] if line.strip()]
    try:
        runs = np.array(rows, dtype=np.int64).reshape(-1, 4)
    except ValueError:
        raise SegFormatError(f"{path}: data lines must hold 4 integers each") from None
    seg, row, c0, c1 = runs.T
    if runs.size and (row.min() < 0 or row.max() >= height or c0.min() < 0 or c1.max() >= width or (c1 < c0).any()):
        raise SegFormatError(f"{path}: a run lies outside the {width}x{height} image")
    labels = np.zeros((height, width), dtype=np.int32)
    painted = seg != 0  # segment 0 (most runs, most pixels) is the zero the image starts as
    seg, row, c0, c1 = seg[painted], row[painted], c0[painted], c1[painted]
    lengths = c1 - c0 + 1
    flat = np.repeat(row * width + c0, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    labels.reshape(-1)[flat] = np.repeat(seg, lengths)
    return Segmentation(labels, header)


def foreground(path: Path) -> np.ndarray:
    """Binary mask of every non-background segment."""
    return (read_seg(path).labels != 0).astype(np.uint8)
