"""Binary anomaly masks as COCO run-length encodings (pycocotools).

A manifest stores every mask as ``{"size": [h, w], "counts": "<compressed RLE>"}`` so
the registry is self-contained; shards store the same mask as a 0/255 PNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils


@dataclass(frozen=True, slots=True)
class RLE:
    """A COCO compressed RLE of a binary ``height x width`` mask."""

    height: int
    width: int
    counts: str

    @classmethod
    def encode(cls, mask: np.ndarray) -> RLE:
        """Encode any 2-D array; non-zero pixels are the anomaly."""
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
        binary = np.asfortranarray(mask != 0, dtype=np.uint8)
        rle = mask_utils.encode(binary)
        return cls(int(mask.shape[0]), int(mask.shape[1]), rle["counts"].decode("ascii"))

    def decode(self) -> np.ndarray:
        """The mask as a C-contiguous ``uint8`` array of 0/1."""
        coco = {"size": [self.height, self.width], "counts": self.counts.encode("ascii")}
        return np.ascontiguousarray(mask_utils.decode(coco))

    def area(self) -> int:
        return int(mask_utils.area(self._coco()))

    def bbox(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the tight box around the non-zero pixels; zeros if empty."""
        x, y, w, h = mask_utils.toBbox(self._coco()).tolist()
        return int(x), int(y), int(w), int(h)

    def to_json(self) -> dict:
        return {"size": [self.height, self.width], "counts": self.counts}

    @classmethod
    def from_json(cls, value: object) -> RLE:
        """Parse and check a manifest's mask value; raises ``ValueError`` when it is not a valid RLE."""
        if not isinstance(value, dict) or set(value) != {"size", "counts"}:
            raise ValueError("mask must be an object with exactly 'size' and 'counts'")
        size, counts = value["size"], value["counts"]
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(v, int) and v > 0 for v in size)
        ):
            raise ValueError(f"mask size must be [height, width] of positive ints, got {size!r}")
        if not isinstance(counts, str) or not counts.isascii():
            raise ValueError("mask counts must be an ASCII string (COCO compressed RLE)")
        rle = cls(size[0], size[1], counts)
        # pycocotools does not validate compressed strings; summing the runs does.
        total = _run_total(counts.encode("ascii"))
        if total != size[0] * size[1]:
            raise ValueError(f"mask RLE covers {total} pixels, expected {size[0] * size[1]}")
        return rle

    def _coco(self) -> dict:
        return {"size": [self.height, self.width], "counts": self.counts.encode("ascii")}


def _run_total(counts: bytes) -> int:
    """Sum of run lengths of a COCO compressed RLE string (the LEB128-like coding of maskApi.c)."""
    total, i, n = 0, 0, len(counts)
    runs: list[int] = []
    while i < n:
        x, k, more = 0, 0, True
        while more:
            if i >= n:
                raise ValueError("mask RLE ends in the middle of a run length")
            c = counts[i] - 48
            if c < 0 or c > 63:
                raise ValueError(f"invalid character {chr(counts[i])!r} in mask RLE")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError("negative run length in mask RLE")
        runs.append(x)
        total += x
    return total


def encode_png(mask: np.ndarray) -> bytes:
    """A binary mask as an 8-bit greyscale PNG with values 0/255 (lossless, deterministic)."""
    ok, buf = cv2.imencode(".png", np.where(mask != 0, 255, 0).astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("could not encode mask as PNG")
    return buf.tobytes()


def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the non-zero pixels of a 2-D mask, or ``None`` when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)
