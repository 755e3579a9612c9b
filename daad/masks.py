"""Binary anomaly masks as COCO run-length encodings (pycocotools).

A manifest stores every mask as ``{"size": [h, w], "counts": "<compressed RLE>"}`` so
the registry is self-contained; shards store the same mask as a 0/255 PNG.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

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
        return np.ascontiguousarray(mask_utils.decode(self._coco()))

    def png(self) -> bytes:
        """The mask as :func:`encode_png` writes it (decoded column-major, as it is stored)."""
        return encode_png(mask_utils.decode(self._coco()))

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
        total = int(_run_lengths(counts.encode("ascii")).sum())
        if total != size[0] * size[1]:
            raise ValueError(f"mask RLE covers {total} pixels, expected {size[0] * size[1]}")
        return rle

    def _coco(self) -> dict:
        return {"size": [self.height, self.width], "counts": self.counts.encode("ascii")}


def _run_lengths(counts: bytes) -> np.ndarray:
    """Decode the run lengths of a COCO compressed RLE string (the coding of maskApi.c's
    ``rleFrString``), vectorised; raises ``ValueError`` on characters or runs that are invalid."""
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("invalid character in mask RLE")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ValueError("mask RLE ends in the middle of a run length")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(c.size) - starts[group]
    if k.max() > 11:
        raise ValueError("run length too long in mask RLE")
    values = np.zeros(ends.size, dtype=np.int64)
    np.add.at(values, group, (c & 0x1F) << (5 * k))
    negative = (c[ends] & 0x10) != 0
    values[negative] |= -1 << (5 * (ends - starts + 1)[negative])
    # rleFrString: for m > 2, cnts[m] = x + cnts[m - 2], i.e. running sums along
    # the odd runs from cnts[1] and along the even runs from cnts[2].
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if (runs < 0).any():
        raise ValueError("negative run length in mask RLE")
    return runs


def encode_png(mask: np.ndarray, *, bits: int = 2) -> bytes:
    """A binary mask as a lossless, deterministic greyscale PNG of 0/255, ``bits`` deep (2 or 8).

    Decoders that follow the PNG spec expand 2-bit grey to 8 bits, so PIL (mode ``L``),
    ``datasets`` and OpenCV read it as 0/255; four pixels a byte make it a third of the
    size of an 8-bit PNG and several times faster to compress. The file is written here
    (rows packed with numpy, filter type 0, zlib level 1; no ancillary chunks): PIL has no
    way to take rows already packed, and its pack-and-encode took 2.5x as long per mask.
    """
    if bits not in (2, 8):
        raise ValueError(f"bits must be 2 or 8, got {bits}")
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    height, width = mask.shape
    on = np.asfortranarray(mask != 0).view(np.uint8)  # each column contiguous, as RLE.decode gives it
    if bits == 8:
        pixels = on * np.uint8(255)
    else:
        columns = on.T  # (width, height), C-contiguous: four adjacent columns make one byte
        if width % 4:
            columns = np.concatenate([columns, np.zeros((-width % 4, height), np.uint8)])
        quads = columns.reshape(-1, 4, height)
        pixels = quads[:, 0] * np.uint8(0xC0)  # the first of four pixels in the top two bits
        for k, bits_of_pixel in ((1, 0x30), (2, 0x0C), (3, 0x03)):
            pixels |= quads[:, k] * np.uint8(bits_of_pixel)
        pixels = pixels.T
    rows = np.zeros((height, 1 + pixels.shape[1]), np.uint8)  # a filter-type byte (0, none) before each row
    rows[:, 1:] = pixels
    header = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)  # greyscale, deflate, no interlace
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 1)) + _chunk(b"IEND", b"")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the non-zero pixels of a 2-D mask, or ``None`` when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)
