"""Near-duplicate detection: perceptual hashes, a finer confirming signature, and an index.

A registry record carries one 64-bit DCT perceptual hash (``Record.phash``, imagehash's
pHash of the grey image). An image another may be a copy of is stored as
:data:`VARIANTS` hashes (:func:`variant_hashes`): its eight dihedral transforms (90°
rotations x mirror, :data:`DIHEDRAL`), each whole and centre-cropped by
:data:`CROP_FRACTION` per side. pHash of the grey image is already blind to greyscale
conversion and nearly blind to resizing, JPEG re-encoding and brightness shifts; the
dihedral variants catch rotated and mirrored copies, the crop variants slightly cropped ones.

A hash match is only a candidate. Low-texture images of one kind (the same tile under
another exposure) share their coarse layout and so their pHash; what tells a copy from
another photograph is the finer texture. :func:`fine_signature` keeps the signs of the
24 x 24 lowest DCT coefficients of a 128 x 128 thumbnail (the four lowest left out:
exposure and shading), whole and cropped; a dihedral transform of the image is a sign
pattern and a transposition of them (:func:`transform_fine`), so two signatures per
image serve all sixteen variants. A candidate is a copy when the share of differing
signs under the matching variant (:func:`fine_distance`) is at most :data:`FINE_THRESHOLD`.
Measured (``benchmarks/leakage.py``): transformed copies of the real images differ in at
most 0.33 of the signs (JPEG q20 of a rotation the worst), photographs of one synthetic
tile under other exposures and grain in at least 0.37.

A record is a near copy of an image when its hash is within :data:`THRESHOLD` bits
(Hamming distance) of one of that image's variant hashes and the fine signatures
confirm it. The coarse threshold was measured on all 1,299 SD-saliency-900 and
KolektorSDD images: at 8 bits, 99.4 % of transformed copies (resize, JPEG q20, 3 % crop,
brightness ±30, grey, flips and combinations) are caught, weakest JPEG q20 (97.8 %).

:class:`HashIndex` finds, for each query hash, the indexed hashes within the threshold by
multi-index hashing: the 64 bits are split into four 16-bit chunks, so a pair within ``t``
bits agrees on some chunk to within ``t // 4`` bits. Only the indexed hashes that agree so
with a query are compared (vectorised popcount), never all pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import scipy.fft
from PIL import Image

from daad.images import perceptual_hash

THRESHOLD = 8
"""Largest Hamming distance (of 64 bits) at which two pHashes are a candidate pair."""
CROP_FRACTION = 0.04
"""Per-side centre crop of the crop variants of an image."""
DIHEDRAL = 8
"""Transforms ``k`` in ``0..7``: mirror left-right if bit 0, flip top-bottom if bit 1,
then transpose if bit 2 (identity, mirror, flip, 180°, transpose, 90° and 270°
rotations, anti-transpose)."""
VARIANTS = 2 * DIHEDRAL
"""Variant ``v``: transform ``v % 8`` of the whole image (``v < 8``) or of its crop."""
FINE_SIZE = 24
"""The fine signature keeps the signs of the FINE_SIZE x FINE_SIZE lowest DCT coefficients ..."""
FINE_THUMB = 128
"""... of a FINE_THUMB x FINE_THUMB grey thumbnail."""
FINE_SKIP = 2
"""The FINE_SKIP x FINE_SKIP lowest coefficients (mean, exposure, shading) are left out."""
FINE_THRESHOLD = 0.35
"""Largest share of differing fine signs at which a hash match is confirmed as a copy."""
CHUNK_BITS = 16
"""Multi-index hashing splits each hash into 16-bit chunks (sorted as ``uint16``)."""
CHUNKS = 64 // CHUNK_BITS
QUERY_BATCH = 65_536

_FINE_USED = np.ones((FINE_SIZE, FINE_SIZE), dtype=bool)
_FINE_USED[:FINE_SKIP, :FINE_SKIP] = False
_ODD = (np.arange(FINE_SIZE) % 2).astype(bool)


def parse_hash(value: str) -> int:
    """A 16-hex-digit hash as an int; raises ``ValueError`` otherwise."""
    if len(value) != 16:
        raise ValueError(f"hash {value!r} is not 16 hex digits")
    return int(value, 16)


def image_hash(image: Image.Image) -> int:
    """The record-side hash: 64-bit pHash of the grey image (same as ``Record.phash``)."""
    return parse_hash(perceptual_hash(image))


def dihedral(image: Image.Image, k: int) -> Image.Image:
    """Dihedral transform ``k`` (see :data:`DIHEDRAL`) of ``image``."""
    if k & 1:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if k & 2:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if k & 4:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    return image


def cropped(image: Image.Image) -> Image.Image:
    """``image`` without :data:`CROP_FRACTION` of each side."""
    w, h = image.size
    dx, dy = round(w * CROP_FRACTION), round(h * CROP_FRACTION)
    return image.crop((dx, dy, w - dx, h - dy))


def variant_hashes(image: Image.Image) -> list[int]:
    """The :data:`VARIANTS` hashes of ``image``, variant ``v`` at index ``v``."""
    grey = image.convert("L")
    return [image_hash(dihedral(base, k)) for base in (grey, cropped(grey)) for k in range(DIHEDRAL)]


def _fine_signs(grey: Image.Image) -> np.ndarray:
    pixels = np.asarray(grey.resize((FINE_THUMB, FINE_THUMB), Image.Resampling.BOX), dtype=np.float64)
    coefficients = scipy.fft.dctn(pixels, norm="ortho")[:FINE_SIZE, :FINE_SIZE]
    return coefficients > 0


def fine_signature(image: Image.Image) -> np.ndarray:
    """``2 x FINE_SIZE x FINE_SIZE`` bool: DCT signs of the whole grey image and of its crop."""
    grey = image.convert("L")
    return np.stack([_fine_signs(grey), _fine_signs(cropped(grey))])


def transform_fine(signs: np.ndarray, k: int) -> np.ndarray:
    """The signs of dihedral transform ``k`` of the image whose signs are ``signs`` (rows: y)."""
    if k & 1:
        signs = signs ^ _ODD[None, :]
    if k & 2:
        signs = signs ^ _ODD[:, None]
    if k & 4:
        signs = signs.T
    return signs


def fine_distance(stored: np.ndarray, variant: int, query: np.ndarray) -> float:
    """Share of differing signs between ``query`` (one image's whole signs) and variant
    ``variant`` of the image whose :func:`fine_signature` is ``stored``."""
    expected = transform_fine(stored[variant // DIHEDRAL], variant % DIHEDRAL)
    return float((expected != query)[_FINE_USED].mean())


def pack_fine(signature: np.ndarray) -> str:
    """A fine signature as hex (``2 * FINE_SIZE**2 / 4`` digits)."""
    return np.packbits(signature.reshape(-1)).tobytes().hex()


def unpack_fine(value: str) -> np.ndarray:
    """Inverse of :func:`pack_fine`; raises ``ValueError`` on a wrong length or digit."""
    size = 2 * FINE_SIZE * FINE_SIZE
    if len(value) != size // 4:
        raise ValueError(f"fine signature has {len(value)} hex digits, expected {size // 4}")
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(value), dtype=np.uint8))[:size]
    return bits.astype(bool).reshape(2, FINE_SIZE, FINE_SIZE)


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

    def pairs(self, hashes: Iterable[int] | np.ndarray) -> Pairs:
        """Every (query, indexed hash) pair within the threshold, sorted by query then distance."""
        queries = np.asarray(hashes if isinstance(hashes, np.ndarray) else list(hashes), dtype=np.uint64).reshape(-1)
        found = [(np.zeros(0, np.int64),) * 3]
        found += [self._near(queries[s : s + QUERY_BATCH], s) for s in range(0, len(queries), QUERY_BATCH)]
        qidx, cand, d = (np.concatenate(parts) for parts in zip(*found))
        keep = np.unique(qidx * max(len(self.hashes), 1) + cand, return_index=True)[1] if len(qidx) else qidx
        qidx, cand, d = qidx[keep], cand[keep], d[keep]
        order = np.lexsort((cand, d, qidx))
        return Pairs(qidx[order], cand[order], d[order])

    def _near(self, queries: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(query index + offset, indexed hash index, distance)`` of the pairs within the threshold,
        per chunk (a pair may repeat)."""
        parts = [(np.zeros(0, np.int64),) * 3]
        for c in range(CHUNKS if len(self.hashes) else 0):
            qidx, cand = self._candidates(queries, c)
            d = np.bitwise_count(queries[qidx] ^ self.hashes[cand]).astype(np.int64)
            near = d <= self.threshold
            parts.append((qidx[near] + offset, cand[near], d[near]))
        return tuple(np.concatenate(p) for p in zip(*parts))

    def _query_batch(self, queries: np.ndarray, best: np.ndarray, dist: np.ndarray) -> None:
        qidx, cand, d = self._near(queries, 0)
        # nearest first (ties: lowest index), so the first hit per query wins
        sel = np.lexsort((cand, d, qidx))
        qidx, cand, d = qidx[sel], cand[sel], d[sel]
        first = np.ones(len(qidx), dtype=bool)
        first[1:] = qidx[1:] != qidx[:-1]
        best[qidx[first]] = cand[first]
        dist[qidx[first]] = d[first]


@dataclass(frozen=True)
class Pairs:
    """Query index, indexed hash index and Hamming distance of each pair within the threshold."""

    query: np.ndarray
    index: np.ndarray
    distance: np.ndarray


def pairwise_matches(queries: np.ndarray, hashes: np.ndarray, threshold: int = THRESHOLD) -> np.ndarray:
    """The naive all-pairs check (for benchmarks and tests): per query, any hash within threshold."""
    q = np.asarray(queries, dtype=np.uint64)[:, None]
    return (np.bitwise_count(q ^ np.asarray(hashes, dtype=np.uint64)[None, :]) <= threshold).any(axis=1)
