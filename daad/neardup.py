"""Near-duplicate detection: perceptual hashes of evaluation images and an index over them.

A registry record carries one 64-bit DCT perceptual hash (``Record.phash``, imagehash's
pHash of the grey image). An evaluation image is stored as several hashes
(:func:`variant_hashes`): the image, its horizontal and vertical flips and its 180°
rotation, each whole and centre-cropped by :data:`CROP_FRACTION` per side. pHash of the
grey image is already blind to greyscale conversion and nearly blind to resizing,
JPEG re-encoding and brightness shifts; the flip variants catch mirrored copies and the
crop variants catch slightly cropped ones.

A record is a near copy of an evaluation image when its hash is within
:data:`THRESHOLD` bits (Hamming distance) of any of that image's hashes. The threshold
was measured on all 1,299 SD-saliency-900 and KolektorSDD images (``benchmarks/leakage.py``):
at 8 bits, 99.4 % of transformed copies (resize, JPEG q20, 3 % crop, brightness ±30, grey,
flips and combinations) are caught, weakest JPEG q20 (97.8 %); three pairs of distinct
images of those very uniform textures fall within 8 bits too (at 10 bits: 99.6 % caught,
11 distinct pairs), so 8 trades a little JPEG recall for fewer false exclusions.

:class:`HashIndex` finds, for each query hash, the nearest indexed hash within the
threshold by multi-index hashing: the 64 bits are split into four 16-bit chunks, so a
pair within ``t`` bits agrees on some chunk to within ``t // 4`` bits. Only the indexed
hashes that agree so with a query are compared (vectorised popcount), never all pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from PIL import Image, ImageOps

from daad.images import perceptual_hash

THRESHOLD = 8
"""Largest Hamming distance (of 64 bits) at which two pHashes count as the same image."""
CROP_FRACTION = 0.04
"""Per-side centre crop of the crop variants of an evaluation image."""
CHUNK_BITS = 16
"""Multi-index hashing splits each hash into 16-bit chunks (sorted as ``uint16``)."""
CHUNKS = 64 // CHUNK_BITS
QUERY_BATCH = 65_536


def parse_hash(value: str) -> int:
    """A 16-hex-digit hash as an int; raises ``ValueError`` otherwise."""
    if len(value) != 16:
        raise ValueError(f"hash {value!r} is not 16 hex digits")
    return int(value, 16)


def image_hash(image: Image.Image) -> int:
    """The record-side hash: 64-bit pHash of the grey image (same as ``Record.phash``)."""
    return parse_hash(perceptual_hash(image))


def variant_hashes(image: Image.Image) -> list[int]:
    """The evaluation-side hashes of ``image``: flips and rotation, whole and centre-cropped."""
    grey = image.convert("L")
    w, h = grey.size
    dx, dy = round(w * CROP_FRACTION), round(h * CROP_FRACTION)
    cropped = grey.crop((dx, dy, w - dx, h - dy))
    hashes = []
    for base in (grey, cropped):
        for variant in (base, ImageOps.mirror(base), ImageOps.flip(base), base.rotate(180)):
            hashes.append(image_hash(variant))
    return sorted(set(hashes))


def _neighbour_masks(bits: int, radius: int) -> np.ndarray:
    """Every ``bits``-bit mask (``bits <= 16``) with at most ``radius`` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in combo) for combo in combinations(range(bits), r)]
    return np.array(masks, dtype=np.uint16)


@dataclass(frozen=True)
class Matches:
    """Per query: index of the nearest indexed hash within the threshold (-1: none) and its distance."""

    index: np.ndarray
    distance: np.ndarray


class HashIndex:
    """Multi-index hashing over 64-bit hashes (``uint64``), queried in vectorised batches.

    The candidates of a query are the indexed hashes within ``threshold // 4`` bits of it on
    some 16-bit chunk. Per chunk the indexed hashes are filed in buckets by chunk value, and
    found one of two ways with the same answer: a batch of fewer queries than indexed hashes
    looks up every value within the radius of each query's own in buckets holding each hash
    once; a larger batch looks up each query's own value in buckets where every hash is filed
    under each value within the radius of its own (built on first use; 137 entries per hash
    and chunk at the default threshold).
    """

    def __init__(self, hashes: Sequence[int] | np.ndarray, threshold: int = THRESHOLD) -> None:
        self.hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1)
        self.threshold = threshold
        self._masks = _neighbour_masks(CHUNK_BITS, threshold // CHUNKS)
        self._exact = self._file(self._masks[:1])
        self._spread: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.hashes)

    @staticmethod
    def _chunk(hashes: np.ndarray, c: int) -> np.ndarray:
        return ((hashes >> np.uint64(c * CHUNK_BITS)) & np.uint64(2**CHUNK_BITS - 1)).astype(np.int64)

    def _file(self, masks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per chunk: the hash ids filed under each chunk value XOR each of ``masks``, grouped
        by that value, and where each value's group starts."""
        filed = []
        for c in range(CHUNKS):
            # 16-bit keys: numpy's stable sort is then a radix sort, several times faster
            keys = (self._chunk(self.hashes, c).astype(np.uint16)[:, None] ^ masks[None, :]).reshape(-1)
            order = np.argsort(keys, kind="stable")
            starts = np.zeros(2**CHUNK_BITS + 1, dtype=np.int64)
            np.cumsum(np.bincount(keys, minlength=2**CHUNK_BITS), out=starts[1:])
            filed.append(((order // len(masks)).astype(np.int32), starts))  # key position -> hash
        return filed

    def query(self, hashes: Iterable[int] | np.ndarray) -> Matches:
        """Nearest indexed hash within the threshold for each query hash."""
        queries = np.asarray(hashes if isinstance(hashes, np.ndarray) else list(hashes), dtype=np.uint64).reshape(-1)
        best = np.full(len(queries), -1, dtype=np.int64)
        dist = np.full(len(queries), 65, dtype=np.int64)
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start : start + QUERY_BATCH]
            self._query_batch(batch, best[start : start + len(batch)], dist[start : start + len(batch)])
        return Matches(best, dist)

    def _candidates(self, queries: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
        """``(query index, indexed hash index)`` of every candidate pair on chunk ``c``."""
        keys = self._chunk(queries, c)
        if len(queries) < len(self.hashes):  # probe every value within the radius
            ids, starts = self._exact[c]
            keys = (keys[:, None] ^ self._masks[None, :]).reshape(-1)
            owner = np.arange(len(keys)) // len(self._masks)
        else:
            if self._spread is None:
                self._spread = self._file(self._masks)
            ids, starts = self._spread[c]
            owner = np.arange(len(keys))
        lo, counts = starts[keys], starts[keys + 1] - starts[keys]
        total = int(counts.sum())
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(owner, counts), ids[np.repeat(lo, counts) + offsets].astype(np.int64)

    def _query_batch(self, queries: np.ndarray, best: np.ndarray, dist: np.ndarray) -> None:
        if len(self.hashes) == 0:
            return
        for c in range(CHUNKS):
            qidx, cand = self._candidates(queries, c)
            if len(qidx) == 0:
                continue
            d = np.bitwise_count(queries[qidx] ^ self.hashes[cand]).astype(np.int64)
            near = d <= self.threshold
            qidx, cand, d = qidx[near], cand[near], d[near]
            # nearest first (ties: lowest index), so the first hit per query wins
            sel = np.lexsort((cand, d, qidx))
            qidx, cand, d = qidx[sel], cand[sel], d[sel]
            first = np.ones(len(qidx), dtype=bool)
            first[1:] = qidx[1:] != qidx[:-1]
            qidx, cand, d = qidx[first], cand[first], d[first]
            better = (d < dist[qidx]) | ((d == dist[qidx]) & (cand < np.where(best[qidx] < 0, 2**62, best[qidx])))
            best[qidx[better]] = cand[better]
            dist[qidx[better]] = d[better]


def pairwise_matches(queries: np.ndarray, hashes: np.ndarray, threshold: int = THRESHOLD) -> np.ndarray:
    """The naive all-pairs check (for benchmarks and tests): per query, any hash within threshold."""
    q = np.asarray(queries, dtype=np.uint64)[:, None]
    return (np.bitwise_count(q ^ np.asarray(hashes, dtype=np.uint64)[None, :]) <= threshold).any(axis=1)
