"""Binary anomaly masks as COCO run-length encodings (pycocotools).

A manifest stores every mask as ``{"size": [h, w], "counts": "<compressed RLE>"}`` so
the registry is self-contained; shards store the same mask as a 0/255 PNG.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils


@dataclass(frozen=True, slots=True)
class RLE:
    """A COCO compressed RLE of a binary ``height x width`` mask."""

    height: int
    width: int
    counts: str
    _runs: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    """The decoded run lengths, kept once :meth:`from_json` has checked them."""

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
        """The mask as a 2-bit greyscale PNG of 0/255, made from the runs in time proportional
        to the runs, not the pixels (see :func:`_png_from_runs`)."""
        runs = self._runs if self._runs is not None else decode_runs([self.counts])[0]
        return _png_from_runs(runs, self.height, self.width)

    def area(self) -> int:
        return int(mask_utils.area(self._coco()))

    def bbox(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the tight box around the non-zero pixels; zeros if empty."""
        x, y, w, h = mask_utils.toBbox(self._coco()).tolist()
        return int(x), int(y), int(w), int(h)

    def to_json(self) -> dict:
        return {"size": [self.height, self.width], "counts": self.counts}

    @classmethod
    def from_json(cls, value: object, runs: np.ndarray | str | None = None) -> RLE:
        """Parse and check a manifest's mask value; raises ``ValueError`` when it is not a valid RLE.

        ``runs`` is what :func:`decode_runs` gave for its counts, where the caller decoded
        many at once; by default they are decoded here.
        """
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
        # pycocotools does not validate compressed strings; decoding and summing the runs does.
        if runs is None:
            (runs,) = decode_runs([counts])
        if isinstance(runs, str):
            raise ValueError(runs)
        pixels = size[0] * size[1]
        if runs.size and int(runs.max()) > pixels:  # also keeps the sum below from overflowing
            raise ValueError(f"mask RLE has a run of {int(runs.max())} pixels in a mask of {pixels}")
        total = int(runs.sum())
        if total != pixels:
            raise ValueError(f"mask RLE covers {total} pixels, expected {pixels}")
        rle = cls(size[0], size[1], counts)
        object.__setattr__(rle, "_runs", runs)
        return rle

    def _coco(self) -> dict:
        return {"size": [self.height, self.width], "counts": self.counts.encode("ascii")}


def decode_runs(counts: list[str]) -> list[np.ndarray | str]:
    """The run lengths of COCO compressed RLE strings (the coding of maskApi.c's
    ``rleFrString``), or for a string that is not valid, why. All strings are decoded at
    once, vectorised, so a chunk of manifest lines costs a few numpy calls, not a few per line.
    """
    n = len(counts)
    lengths_of = np.fromiter(map(len, counts), np.int64, n)
    c = np.frombuffer("".join(counts).encode("ascii"), np.uint8) - np.uint8(48)  # below '0' wraps past 63
    if c.size == 0:
        return [np.zeros(0, np.int64) for _ in counts]
    errors: list[str | None] = [None] * n

    def fail(strings: np.ndarray, why: str) -> None:
        for i in strings.tolist():
            errors[i] = errors[i] or why

    owner = np.repeat(np.arange(n), lengths_of)  # the string of each character
    fail(owner[c > 63], "invalid character in mask RLE")
    last = (c & 0x20) == 0  # the last character of a run length
    tails = np.cumsum(lengths_of)[lengths_of > 0] - 1
    fail(owner[tails[~last[tails]]], "mask RLE ends in the middle of a run length")
    last[tails] = True  # so that no run length goes on into the next string
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    width = ends - starts + 1
    string = owner[ends]  # the string of each run
    fail(string[width > 12], "run length too long in mask RLE")
    shift = 5 * np.minimum(np.arange(c.size) - np.repeat(starts, width), 12)  # five bits a character, low first
    runs = np.add.reduceat((c & 0x1F).astype(np.int64) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    runs[negative] |= -1 << (5 * np.minimum(width[negative], 12))
    # rleFrString: for m > 2, cnts[m] = x + cnts[m - 2], i.e. running sums, within each string,
    # along the odd runs from cnts[1] and along the even runs from cnts[2].
    per_string = np.bincount(string, minlength=n)
    bounds = np.cumsum(per_string)
    first = bounds - per_string  # the index of each string's first run
    m = np.arange(runs.size) - np.repeat(first, per_string)
    odd, even = (m & 1) == 1, ((m & 1) == 0) & (m > 0)
    for chosen in (odd, even):
        total = np.concatenate(([0], np.cumsum(np.where(chosen, runs, 0))))
        # each string's sums start from what came before it
        runs = np.where(chosen, total[1:] - np.repeat(total[first], per_string), runs)
    fail(string[runs < 0], "negative run length in mask RLE")
    decoded = [runs[a:b] for a, b in zip(first.tolist(), bounds.tolist())]
    return [why if why is not None else r for why, r in zip(errors, decoded)]


def _png_from_runs(runs: np.ndarray, height: int, width: int) -> bytes:
    """The 2-bit greyscale PNG of a mask given by its column-major run lengths (off, on, off ...).

    Rows are written with PNG's Up filter, which stores each byte minus the byte above it,
    so a column's run of anomaly pixels is two non-zero bytes however long it is: where it
    starts (+ its bits) and just after it ends (- its bits). Decoders add the rows back up.
    """
    stride = 1 + (width + 3) // 4  # the filter-type byte, then four pixels a byte
    stops = np.cumsum(runs)[1::2]
    lengths = runs[1::2]
    stops, lengths = stops[lengths > 0], lengths[lengths > 0]
    starts = stops - lengths
    column = starts // height
    top, bottom = starts - column * height, stops - column * height
    spans = (stops - 1) // height - column + 1
    if spans.size and spans.max() > 1:  # runs that go on into the next column: one piece per column
        run = np.repeat(np.arange(spans.size), spans)
        column = column[run] + np.arange(run.size) - np.repeat(np.cumsum(spans) - spans, spans)
        top = np.maximum(starts[run] - column * height, 0)
        bottom = np.minimum(stops[run] - column * height, height)
    byte = 1 + (column >> 2)
    bits = (0xC0 >> ((column & 3) << 1)).astype(np.uint8)  # the first of four pixels in the top two bits
    up = np.zeros((height + 1) * stride, np.uint8)  # one row more, for runs that end at the bottom
    np.add.at(up, top * stride + byte, bits)
    np.subtract.at(up, bottom * stride + byte, bits)
    rows = up[: height * stride].reshape(height, stride)
    rows[:, 0] = 2  # filter type Up
    return _png(width, height, 2, rows)


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
    return _png(width, height, bits, rows)


def _png(width: int, height: int, bits: int, rows: np.ndarray) -> bytes:
    """A greyscale PNG of ``rows`` (filtered scanlines, each with its filter-type byte)."""
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
