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
signs under the matching variant (:func:`fine_distance`) is at most :data:`FINE_THRESHOLD`;
the queried image's crops are tried at 25 offsets (:func:`query_signature`), so a copy
framed a few pixels differently (SD-saliency-900 holds such pairs) is confirmed too.
Measured whole against whole (the crops only lower a distance): transformed copies of a
quarter of the SD-saliency-900 and KolektorSDD images differed in at most 0.33 of the signs
(JPEG q20 of a rotation the worst), NEU-Seg's copies of SD-saliency-900 records in at most
0.32 (median 0.03); photographs of one synthetic tile under other exposures and grain
(``benchmarks/leakage.py``), crops and offsets included, in at least 0.37.

A record is a near copy of an image when its hash is within :data:`THRESHOLD` bits
(Hamming distance) of one of that image's variant hashes and the fine signatures
confirm it. Measured on all 5,924 real images at hand (SD-saliency-900, KolektorSDD,
CrackForest, NEU-Seg; ``benchmarks/leakage.py --neu-seg``): 99.7 % of transformed copies
(the eight dihedral transforms, resize, JPEG q20, 3 % crop, brightness ±30, grey and
combinations) are caught, every plain dihedral transform 100 %, weakest JPEG q20 (98.4 %:
the pHash of a low-texture image moves more than 8 bits).

Both checks compare coarse layout, and structured low-texture photographs share it: road
survey frames 5 m apart, another stretch of the same road, another tile of one kind. The
registry-wide dedup (:mod:`daad.registry.dedup`, which has both images) therefore confirms a
pair a third time, pixel against pixel (the leakage guard, holding only stored signatures,
does not). :func:`detail_thumbnails` keeps the fine detail of a 128 x 128 grey thumbnail, whole
and cropped: a band-pass (Gaussian of :data:`DETAIL_SMOOTH` less one of :data:`DETAIL_SIGMA`
pixels) divided by its local RMS, so a road's lane markings weigh no more than its asphalt;
:func:`query_detail` that of the query's whole, the 25 crops of :func:`query_signature` and
centred crops of other shares per axis. :func:`detail_correlation` is their best normalised
correlation under the matched dihedral transform, every stored against every query thumbnail
at every shift of up to :data:`DETAIL_SHIFT` pixels (scales within ±8 % per axis: MTD's
exposures of one tile are cut a few pixels apart). A copy is the same view of the same
surface, however transformed or re-exposed; a pair is one when the correlation is at least
:data:`DETAIL_THRESHOLD`. Measured (``benchmarks/dedup_detail.py``, 30 images of each of ten real
sources, road, spindle and tile photographs among them, 20 transformed copies each): 99.35 % of the
6,000 copies pass all three checks (hash and fine signature alone: 99.82 %), every dihedral
transform, resize, brightness and grey 100 %; weakest JPEG q20 (95.7 %: SD-saliency-900's small,
flat images lose their detail; SD-saliency-900 95.8 % over all transforms, every other source
at least 99.3 %). Of the pairs the first two checks pass between different photographs, few
pass the third: Cracks and Potholes frames of another road 0 of 31 (correlation median 0.25),
of the same road further along 1 of 283 (0.38), the next frame 8 of 155 (0.48); MTD's exposures
of one tile 228 of 238 pass (0.82). Photographs of one synthetic near-uniform tile
(``benchmarks/leakage.py``) already fail the fine signature (0 of 7,800 pairs); their brighter
JPEG copies pass all three (200 of 200).

:class:`HashIndex` finds, for each query hash, the indexed hashes within the threshold by
multi-index hashing: the 64 bits are cut into three chunks, so a pair within ``t`` bits
agrees on some chunk to within ``t // 3`` bits. Only the indexed hashes that agree so with
a query are compared (vectorised popcount), never all pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import cv2
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
DETAIL_THUMB = 128
"""The detail check compares DETAIL_THUMB x DETAIL_THUMB grey thumbnails ..."""
DETAIL_SMOOTH = 1.0
"""... smoothed by a Gaussian of this sigma (thumbnail pixels; JPEG noise and a pixel of misalignment) ..."""
DETAIL_SIGMA = 2.5
"""... less their Gaussian blur of this sigma: the fine detail, ..."""
DETAIL_LOCAL = 6.0
"""... divided by its local RMS (Gaussian of this sigma), so every region weighs alike (not
only the strongest edges: a road's lane markings), ..."""
DETAIL_FLOOR = 1e-3
"""... plus this share of its mean energy (flat regions do not blow up their noise)."""
DETAIL_SHIFT = 6
"""Thumbnails are compared at every shift of up to DETAIL_SHIFT pixels each way."""
DETAIL_THRESHOLD = 0.65
"""Smallest correlation of fine detail at which a confirmed candidate is a copy (dedup only)."""
CHUNK_BITS = (22, 21, 21)
"""Multi-index hashing cuts each hash into three chunks (low bits first)."""
QUERY_BATCH = 8192

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


SHIFT_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Where the query-side crops sit: the same total crop as the crop variants, split between
the two sides of each axis in these shares (25 crops, the centred one among them)."""


def _shifted_crops(grey: Image.Image) -> list[Image.Image]:
    """``grey`` cropped by 2 x :data:`CROP_FRACTION` per axis at every :data:`SHIFT_STEPS` offset."""
    w, h = grey.size
    tx, ty = 2 * round(w * CROP_FRACTION), 2 * round(h * CROP_FRACTION)
    return [
        grey.crop((round(tx * fx), round(ty * fy), w - tx + round(tx * fx), h - ty + round(ty * fy)))
        for fy in SHIFT_STEPS
        for fx in SHIFT_STEPS
    ]


def query_signature(image: Image.Image) -> np.ndarray:
    """``26 x FINE_SIZE x FINE_SIZE`` bool: the signs of the whole grey image, then of its crops
    by 2 x :data:`CROP_FRACTION` per axis at every :data:`SHIFT_STEPS` offset. A crop variant of
    a stored image is compared with the best aligned of them, so a copy shifted by up to that
    crop (a publisher's other framing of one picture) is confirmed too."""
    grey = image.convert("L")
    return np.stack([_fine_signs(grey), *(_fine_signs(c) for c in _shifted_crops(grey))])


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
    """Share of differing signs between the image whose :func:`query_signature` is ``query``
    and the image whose :func:`fine_signature` is ``stored`` under the dihedral transform of
    variant ``variant``: whole against whole, or its crop against the query whole (a cropped
    copy) or the best aligned query crop (a shifted copy), whichever is nearest."""
    k = variant % DIHEDRAL
    whole = (transform_fine(stored[0], k) != query[0])[_FINE_USED].mean()
    crops = (query != transform_fine(stored[1], k)[None])[:, _FINE_USED].mean(axis=1).min()
    return float(min(whole, crops))


def _blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, mirrored at the edges, the kernel cut at 4 sigma (as scipy's, many times faster)."""
    return cv2.GaussianBlur(pixels, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _detail(grey: Image.Image) -> np.ndarray:
    pixels = np.asarray(grey.resize((DETAIL_THUMB, DETAIL_THUMB), Image.Resampling.BOX), dtype=np.float32)
    detail = _blur(pixels, DETAIL_SMOOTH) - _blur(pixels, DETAIL_SIGMA)
    energy = detail * detail
    detail /= np.sqrt(_blur(energy, DETAIL_LOCAL) + DETAIL_FLOOR * energy.mean() + 1e-2)
    detail -= detail.mean()
    return detail / max(float(np.linalg.norm(detail)), 1e-9)


def _detail_grey(image: Image.Image) -> Image.Image:
    """The grey image, reduced by a whole factor (box filter) to no less than 2 x :data:`DETAIL_THUMB`
    per side: its crops' thumbnails barely change and are made many times faster."""
    grey = image.convert("L")
    factor = min(grey.size) // (2 * DETAIL_THUMB)
    return grey.reduce(factor) if factor > 1 else grey


def detail_thumbnails(image: Image.Image) -> np.ndarray:
    """``2 x DETAIL_THUMB x DETAIL_THUMB`` float32: the fine detail (see :data:`DETAIL_SIGMA`) of
    the whole grey image and of its crop."""
    grey = _detail_grey(image)
    return np.stack([_detail(grey), _detail(cropped(grey))])


def _rescaled_crops(grey: Image.Image) -> list[Image.Image]:
    """``grey`` cropped about its centre by 0, 1 or 2 x :data:`CROP_FRACTION` in total per axis
    (but not 0 on both, the whole, nor 2 on both, the centre of :func:`_shifted_crops`)."""
    w, h = grey.size
    steps = [(nx, ny) for ny in range(3) for nx in range(3) if (nx, ny) not in ((0, 0), (2, 2))]
    return [
        grey.crop((round(w * CROP_FRACTION * nx / 2), round(h * CROP_FRACTION * ny / 2),
                   w - round(w * CROP_FRACTION * nx / 2), h - round(h * CROP_FRACTION * ny / 2)))
        for nx, ny in steps
    ]


def query_detail(image: Image.Image) -> np.ndarray:
    """``33 x DETAIL_THUMB x DETAIL_THUMB``: the detail of the whole image, of the crops
    :func:`query_signature` uses, then of its centred crops by other shares per axis
    (:func:`_rescaled_crops`): against a stored image's whole and crop they span a scale of
    ±2 x :data:`CROP_FRACTION` per axis in steps of :data:`CROP_FRACTION`."""
    grey = _detail_grey(image)
    return np.stack([_detail(g) for g in (grey, *_shifted_crops(grey), *_rescaled_crops(grey))])


def detail_correlation(stored: np.ndarray, variant: int, query: np.ndarray) -> float:
    """Normalised correlation of fine detail between the image whose :func:`query_detail` is
    ``query`` and the image whose :func:`detail_thumbnails` are ``stored`` under the dihedral
    transform of variant ``variant``, at the best alignment: every stored thumbnail against
    every query thumbnail, shifted by up to :data:`DETAIL_SHIFT` pixels each way."""
    k = variant % DIHEDRAL
    turned = np.stack([np.asarray(dihedral(Image.fromarray(d, "F"), k)) for d in stored])
    spectra = scipy.fft.rfft2(query)[None] * np.conj(scipy.fft.rfft2(turned))[:, None]
    correlation = scipy.fft.irfft2(spectra, s=query.shape[1:])  # circular: index (dy, dx) is that shift
    near = np.r_[0 : DETAIL_SHIFT + 1, -DETAIL_SHIFT:0]
    return float(correlation[:, :, near][:, :, :, near].max())


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
    """Every ``bits``-bit mask with at most ``radius`` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in combo) for combo in combinations(range(bits), r)]
    return np.array(masks, dtype=np.int32)


@dataclass(frozen=True)
class Matches:
    """Per query: index of the nearest indexed hash within the threshold (-1: none) and its distance."""

    index: np.ndarray
    distance: np.ndarray


@dataclass(frozen=True)
class Pairs:
    """Query index, indexed hash index and Hamming distance of each pair within the threshold."""

    query: np.ndarray
    index: np.ndarray
    distance: np.ndarray


class HashIndex:
    """Multi-index hashing over 64-bit hashes (``uint64``), queried in vectorised batches.

    The 64 bits are cut into :data:`CHUNK_BITS` (22, 21 and 21 bits); a pair within ``t``
    bits differs on some chunk in at most ``t // 3`` bits. Per chunk the hashes are filed in
    buckets by chunk value; the smaller side of a lookup (the queries, or the indexed hashes
    when the queries are more: then the queries are filed and the pairs swapped) probes every
    value within that radius of its own (254 values per chunk at the default threshold), and
    only the hashes found so are compared (vectorised popcount).
    """

    def __init__(self, hashes: Sequence[int] | np.ndarray, threshold: int = THRESHOLD) -> None:
        self.hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1)
        self.threshold = threshold
        self._masks = [_neighbour_masks(bits, threshold // len(CHUNK_BITS)) for bits in CHUNK_BITS]
        self._filed: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.hashes)

    @staticmethod
    def _chunk(hashes: np.ndarray, c: int) -> np.ndarray:
        shift = sum(CHUNK_BITS[:c])
        return ((hashes >> np.uint64(shift)) & np.uint64(2 ** CHUNK_BITS[c] - 1)).astype(np.int64)

    def _buckets(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per chunk: the hash ids sorted by chunk value, where each value's bucket starts, and
        whether it holds any hash (a compact table probed first: most probed values hold none),
        built on first use."""
        if self._filed is None:
            self._filed = []
            for c, bits in enumerate(CHUNK_BITS):
                keys = self._chunk(self.hashes, c)
                sizes = np.bincount(keys, minlength=2**bits)
                starts = np.zeros(2**bits + 1, dtype=np.int64)
                np.cumsum(sizes, out=starts[1:])
                self._filed.append((np.argsort(keys, kind="stable").astype(np.int32), starts, sizes > 0))
        return self._filed

    def query(self, hashes: Iterable[int] | np.ndarray) -> Matches:
        """Nearest indexed hash within the threshold for each query hash (ties: lowest index)."""
        pairs = self.pairs(hashes)
        n = len(np.asarray(hashes if isinstance(hashes, np.ndarray) else list(hashes)).reshape(-1))
        best = np.full(n, -1, dtype=np.int64)
        dist = np.full(n, 65, dtype=np.int64)
        first = np.ones(len(pairs.query), dtype=bool)  # pairs come sorted: nearest first per query
        first[1:] = pairs.query[1:] != pairs.query[:-1]
        best[pairs.query[first]] = pairs.index[first]
        dist[pairs.query[first]] = pairs.distance[first]
        return Matches(best, dist)

    def pairs(self, hashes: Iterable[int] | np.ndarray) -> Pairs:
        """Every (query, indexed hash) pair within the threshold, sorted by query, distance, index."""
        queries = np.asarray(hashes if isinstance(hashes, np.ndarray) else list(hashes), dtype=np.uint64).reshape(-1)
        if len(queries) > len(self.hashes):  # probe from the smaller side
            swapped = HashIndex(queries, self.threshold)._near(self.hashes)
            qidx, cand, d = swapped[1], swapped[0], swapped[2]
        else:
            qidx, cand, d = self._near(queries)
        key = qidx * max(len(self.hashes), 1) + cand
        keep = np.unique(key, return_index=True)[1]  # a pair found on several chunks counts once
        qidx, cand, d = qidx[keep], cand[keep], d[keep]
        order = np.lexsort((cand, d, qidx))
        return Pairs(qidx[order], cand[order], d[order])

    def _near(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(query index, indexed hash index, distance)`` of the pairs within the threshold
        (a pair found on several chunks repeats)."""
        parts = [(np.zeros(0, np.int64),) * 3]
        if len(self.hashes):
            for start in range(0, len(queries), QUERY_BATCH):
                batch = queries[start : start + QUERY_BATCH]
                for c, (ids, starts, occupied) in enumerate(self._buckets()):
                    masks = self._masks[c]
                    keys = (self._chunk(batch, c).astype(np.int32)[:, None] ^ masks[None, :]).reshape(-1)
                    hit = np.flatnonzero(occupied[keys])
                    values = keys[hit]
                    lo = starts[values]
                    counts = starts[values + 1] - lo
                    ends = np.cumsum(counts)
                    positions = np.repeat(lo - ends + counts, counts) + np.arange(ends[-1] if len(ends) else 0)
                    owner = np.repeat(hit // len(masks), counts)
                    cand = ids[positions]
                    d = np.bitwise_count(batch[owner] ^ self.hashes[cand])
                    near = np.flatnonzero(d <= self.threshold)
                    parts.append((owner[near] + start, cand[near].astype(np.int64), d[near].astype(np.int64)))
        return tuple(np.concatenate(p) for p in zip(*parts))


def pairwise_matches(queries: np.ndarray, hashes: np.ndarray, threshold: int = THRESHOLD) -> np.ndarray:
    """The naive all-pairs check (for benchmarks and tests): per query, any hash within threshold."""
    q = np.asarray(queries, dtype=np.uint64)[:, None]
    return (np.bitwise_count(q ^ np.asarray(hashes, dtype=np.uint64)[None, :]) <= threshold).any(axis=1)
