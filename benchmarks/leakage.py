"""Near-duplicate leakage check: scale and accuracy.

1. Scale: 1,000,000 registry hashes against 10,000 evaluation images x 16 variant hashes
   (synthetic, uniform random, with 1,000 planted near copies) through
   :class:`daad.registry.neardup.HashIndex`: time and peak memory, next to the naive all-pairs
   check timed on a subset and extrapolated (ratio).
2. Accuracy on real data: every SD-saliency-900, KolektorSDD and CrackForest image (and
   NEU-Seg's where ``--neu-seg PATH`` gives its extracted release), transformed copies
   (the eight dihedral transforms, resize, JPEG q20, 3 % crop, brightness ±30, grey and
   combinations) matched, hash then fine signature, against the evaluation hashes of all
   images: share of copies caught; and every pair of distinct real images whose hashes
   match, confirmed or not (with the mean pixel difference of their thumbnails under the
   matching transform, so identical pairs in the releases can be told apart).
3. False positives on near-uniform textures: photographs of one synthetic tile under
   other exposures and grain (:func:`tile_photographs`), pairs whose hashes match and
   pairs confirmed, next to brightness/JPEG copies of the same images (which must be).

Run: ``python benchmarks/leakage.py [--registry 1000000] [--eval 10000] [--no-real] [--neu-seg PATH]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

if __package__:  # imported by the tests as benchmarks.leakage
    from benchmarks.common import SHARED
else:
    from common import SHARED  # puts the checkout on sys.path

from daad.registry.exclusion import EvaluationHashes  # noqa: E402
from daad.registry.neardup import (  # noqa: E402
    FINE_THRESHOLD, THRESHOLD, VARIANTS, HashIndex, cropped, dihedral, fine_distance, fine_signature, image_hash,
    pairwise_matches, query_signature, variant_hashes,
)

REAL_IMAGES = {
    "sd_saliency_900": sorted((SHARED / "sd-saliency-900" / "Source Images").glob("*.bmp")),
    "kolektorsdd": sorted((SHARED / "kolektorsdd-yolo" / "Datasets" / "images").glob("*/*.jpg")),
    "crackforest": sorted((SHARED / "crackforest" / "image").glob("*.jpg")),
}


def jpeg(image: Image.Image, quality: int = 20) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def crop(image: Image.Image, fraction: float = 0.03) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * fraction), int(h * fraction)
    return image.crop((dx, dy, w - dx, h - dy))


def brightness(image: Image.Image, delta: int) -> Image.Image:
    array = np.asarray(image.convert("RGB")).astype(np.int16) + delta
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


TRANSFORMS = {
    "resize": lambda im: im.resize((im.width // 2, im.height // 2)),
    "jpeg20": jpeg,
    "crop3%": crop,
    "brighter": lambda im: brightness(im, 30),
    "darker": lambda im: brightness(im, -30),
    "grey": lambda im: im.convert("L"),
    "hflip": ImageOps.mirror,
    "vflip": ImageOps.flip,
    "flip+resize+jpeg": lambda im: jpeg(ImageOps.mirror(im.resize((int(im.width * 0.7), int(im.height * 0.7)))), 30),
    "crop+grey+brighter": lambda im: brightness(crop(im.convert("L"), 0.02), 20),
    **{f"dihedral{k}": (lambda k: lambda im: dihedral(im, k))(k) for k in range(1, 8)},
    "rot90+jpeg": lambda im: jpeg(dihedral(im, 5), 30),
    "transverse+crop+resize": lambda im: crop(dihedral(im, 7)).resize((im.height * 3 // 4, im.width * 3 // 4)),
    "rot270+darker": lambda im: brightness(dihedral(im, 6), -25),
}
"""Transformed copies of an evaluation image that must be caught (also used by tests/test_leakage.py)."""


def tile_photographs(seed: int, n: int, size: int = 256, grain: float = 1.0, amplitude: float = 6.0) -> list[Image.Image]:
    """``n`` photographs of one near-uniform tile: the same smooth layout (shading and dark
    edges), each under another exposure (gain 0.8-1.25, offset ±20), with its own grain
    (Gaussian, ``grain`` px, ``amplitude`` grey levels), sensor noise and a few pixels of shift."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    tile = gaussian_filter(rng.normal(0, 1, (size + 8, size + 8)), size / 10)
    tile = 120 + 15 * tile / tile.std()
    tile[:, :12] -= 40
    tile[:, -12:] -= 40
    photos = []
    for _ in range(n):
        texture = gaussian_filter(rng.normal(0, 1, tile.shape), grain)
        pixels = (tile + amplitude * texture / texture.std()) * rng.uniform(0.8, 1.25) + rng.uniform(-20, 20)
        dy, dx = rng.integers(0, 7, 2)
        pixels = pixels[dy : dy + size, dx : dx + size] + rng.normal(0, 2, (size, size))
        photos.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return photos


def near_copies(stored: EvaluationHashes, images: list[Image.Image]) -> list:
    """:meth:`EvaluationHashes.matches` of ``images`` (hash, then fine signature)."""
    fine = [query_signature(im) for im in images]
    return stored.matches(HashIndex(stored.hashes), [image_hash(im) for im in images], lambda q: fine[q])


def scale(n_registry: int, n_eval: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    evaluation = rng.integers(0, 2**64, size=n_eval * VARIANTS, dtype=np.uint64)
    registry = rng.integers(0, 2**64, size=n_registry, dtype=np.uint64)
    planted = rng.choice(n_registry, size=1000, replace=False)
    noise = np.zeros(1000, dtype=np.uint64)
    for i in range(1000):
        for bit in rng.choice(64, size=int(rng.integers(0, THRESHOLD + 1)), replace=False):
            noise[i] |= np.uint64(1) << np.uint64(bit)
    registry[planted] = evaluation[rng.integers(0, len(evaluation), size=1000)] ^ noise

    tracemalloc.start()
    start = time.perf_counter()
    index = HashIndex(evaluation)
    matches = index.query(registry)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    found = np.flatnonzero(matches.index >= 0)
    print(f"index: {n_registry:,} registry hashes x {n_eval:,} evaluation images ({len(evaluation):,} variant "
          f"hashes; threshold {THRESHOLD}): "
          f"{elapsed:.2f} s, peak {peak / 2**20:.0f} MiB (numpy, tracemalloc); "
          f"{len(found)} matches, planted found {np.isin(planted, found).sum()}/1000")

    start = time.perf_counter()
    HashIndex(evaluation[::VARIANTS]).query(registry)
    plain_s = time.perf_counter() - start
    print(f"same index, one hash per evaluation image ({n_eval:,}, no variants; the guard before dihedral "
          f"variants): {plain_s:.2f} s -> sixteen variants cost {elapsed / plain_s:.1f}x")

    subset = 20_000
    start = time.perf_counter()
    for s in range(0, subset, 2000):
        pairwise_matches(registry[s : s + 2000], evaluation)
    naive_s = (time.perf_counter() - start) * n_registry / subset
    print(f"naive all-pairs (vectorised numpy, timed on {subset:,} queries, extrapolated): {naive_s:.1f} s "
          f"-> index is {naive_s / elapsed:.1f}x faster")
    start = time.perf_counter()
    for q in registry[:200]:
        [int(q ^ e).bit_count() <= THRESHOLD for e in evaluation]
    loop_s = (time.perf_counter() - start) * n_registry / 200
    print(f"naive Python loop (timed on 200 queries, extrapolated): {loop_s:.0f} s -> index is {loop_s / elapsed:.0f}x faster")


def real(extra: dict[str, list[Path]]) -> None:
    sets = {**REAL_IMAGES, **extra}
    paths = [p for ps in sets.values() for p in ps]
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    start = time.perf_counter()
    stored = EvaluationHashes.of_images((str(i), p) for i, p in enumerate(paths))
    print(f"real: {len(paths)} images ({', '.join(f'{k} {len(v)}' for k, v in sets.items())}), "
          f"{len(stored.hashes)} evaluation hashes in {time.perf_counter() - start:.1f} s")

    # distinct images that are copies of each other (the releases hold some, NEU-Seg thousands)
    pairs = HashIndex(stored.hashes).pairs([image_hash(im) for im in images])
    fine = [query_signature(im) for im in images]
    matched: dict[tuple[int, int], tuple[float, int, int]] = {}  # pair -> (share, plain image, variant of the other)
    for q, hit in zip(pairs.query.tolist(), pairs.index.tolist()):
        other = hit // VARIANTS
        if other != q:
            share = fine_distance(stored.fine[other], hit % VARIANTS, fine[q])
            key = (min(q, other), max(q, other))
            if key not in matched or share < matched[key][0]:
                matched[key] = (share, q, hit % VARIANTS)
    confirmed = {k: v for k, v in matched.items() if v[0] <= FINE_THRESHOLD}
    group = list(range(len(images)))  # union-find over confirmed pairs: one group per picture

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i, j in confirmed:
        group[root(i)] = root(j)

    caught = total = 0
    for name, transform in TRANSFORMS.items():
        found = near_copies(stored, [transform(im) for im in images])
        own = np.array([m is not None for m in found])
        right = np.array([m is not None and root(m.image) == root(i) for i, m in enumerate(found)])
        missed = [paths[i].name for i in np.flatnonzero(~own)]
        print(f"  {name:24s} caught {own.mean():7.2%} (matched to its own picture {right.mean():7.2%})"
              + (f"; missed {len(missed)}: {', '.join(missed[:6])}{' ...' if len(missed) > 6 else ''}" if missed else ""))
        caught += int(own.sum())
        total += len(images)
    print(f"transformed copies caught (hash + fine signature): {caught}/{total} = {caught / total:.2%}")

    def thumb(image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image.convert("L").resize((64, 64)), dtype=np.float32)
        return (pixels - pixels.mean()) / (pixels.std() + 1e-6)

    rows = []
    for (i, j), (share, q, variant) in sorted(confirmed.items()):
        other = images[i + j - q].convert("L")
        a, b = thumb(images[q]), thumb(dihedral(other if variant < 8 else cropped(other), variant % 8))
        rows.append((float((a * b).mean()), share, q, i + j - q))
    unlike = [r for r in rows if r[0] < 0.9]
    print(f"distinct real images whose hashes match under some variant: {len(matched)} pairs; confirmed by "
          f"the fine signature: {len(confirmed)} ({len(set(map(root, range(len(images)))))} pictures left), of "
          f"which {len(rows) - len(unlike)} look like the same picture (correlation of normalised 64 px "
          f"thumbnails under the matching variant >= 0.9) and {len(unlike)} do not (listed: look at them)")
    for corr, share, i, j in sorted(rows if len(rows) <= 30 else unlike):
        print(f"    {paths[i].parent.name}/{paths[i].name} ~ {paths[j].parent.name}/{paths[j].name} "
              f"fine {share:.2f}, thumbnail correlation {corr:.2f}")


def textures() -> None:
    print("near-uniform textures: 40 photographs per tile (other exposure, grain, noise, shift)")
    for seed, (grain, amplitude) in enumerate(((1, 6), (2, 6), (1, 4), (2, 4), (4, 8))):
        photos = tile_photographs(100 + seed, 40, grain=grain, amplitude=amplitude)
        stored = EvaluationHashes(
            tuple(map(str, range(len(photos)))),
            np.array([variant_hashes(p) for p in photos], dtype=np.uint64),
            np.array([fine_signature(p) for p in photos]),
        )
        pairs = HashIndex(stored.hashes).pairs([image_hash(p) for p in photos])
        fine = [query_signature(p) for p in photos]
        hashed, confirmed = set(), set()
        for q, hit in zip(pairs.query.tolist(), pairs.index.tolist()):
            if hit // VARIANTS != q:
                hashed.add((q, hit // VARIANTS))
                if fine_distance(stored.fine[hit // VARIANTS], hit % VARIANTS, fine[q]) <= FINE_THRESHOLD:
                    confirmed.add((q, hit // VARIANTS))
        copies = near_copies(stored, [jpeg(brightness(p, 25), 40) for p in photos])
        print(f"  grain {grain} px, ±{amplitude}: photographs with another within {THRESHOLD} bits "
              f"{len({q for q, _ in hashed}) / len(photos):.0%}; after the fine check "
              f"{len({q for q, _ in confirmed}) / len(photos):.0%} ({len(confirmed)} of "
              f"{len(photos) * (len(photos) - 1)} ordered pairs); brighter JPEG copies caught "
              f"{sum(m is not None and m.image == i for i, m in enumerate(copies))}/{len(photos)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=int, default=1_000_000)
    parser.add_argument("--eval", type=int, default=10_000)
    parser.add_argument("--no-real", action="store_true", help="Skip the real-data accuracy part.")
    parser.add_argument("--neu-seg", type=Path, help="NEU-Seg's extracted release (images/*/*.jpg), added to the real images.")
    args = parser.parse_args()
    scale(args.registry, args.eval)
    textures()
    if not args.no_real:
        real({"neu_seg": sorted((args.neu_seg / "images").glob("*/*.jpg"))} if args.neu_seg else {})


if __name__ == "__main__":
    main()
