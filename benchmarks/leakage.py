"""Near-duplicate leakage check: scale and accuracy.

1. Scale: 1,000,000 registry hashes against 10,000 evaluation hashes (synthetic,
   uniform random, with 1,000 planted near copies) through :class:`daad.neardup.HashIndex`:
   time and peak memory, next to the naive all-pairs check timed on a subset and
   extrapolated (ratio).
2. Accuracy on real data: every SD-saliency-900 and KolektorSDD image, transformed
   copies (resize, JPEG q20, 3 % crop, brightness ±30, grey, flips, combinations) matched
   against the evaluation hashes of all images: share of copies caught, and every pair of
   distinct real images flagged as near copies of each other (with the mean pixel
   difference of their thumbnails, so identical pairs in the releases can be told apart).

Run: ``python benchmarks/leakage.py [--registry 1000000] [--eval 10000] [--no-real]``.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daad.exclusion import EvaluationHashes  # noqa: E402
from daad.neardup import THRESHOLD, HashIndex, image_hash, pairwise_matches  # noqa: E402

SHARED = Path(os.environ.get("DAAD_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_IMAGES = {
    "sd_saliency_900": sorted((SHARED / "sd-saliency-900" / "Source Images").glob("*.bmp")),
    "kolektorsdd": sorted((SHARED / "kolektorsdd-yolo" / "Datasets" / "images").glob("*/*.jpg")),
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
}
"""Transformed copies of an evaluation image that must be caught (also used by tests/test_leakage.py)."""


def scale(n_registry: int, n_eval: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    evaluation = rng.integers(0, 2**64, size=n_eval, dtype=np.uint64)
    registry = rng.integers(0, 2**64, size=n_registry, dtype=np.uint64)
    planted = rng.choice(n_registry, size=1000, replace=False)
    noise = np.zeros(1000, dtype=np.uint64)
    for i in range(1000):
        for bit in rng.choice(64, size=int(rng.integers(0, THRESHOLD + 1)), replace=False):
            noise[i] |= np.uint64(1) << np.uint64(bit)
    registry[planted] = evaluation[rng.integers(0, n_eval, size=1000)] ^ noise

    tracemalloc.start()
    start = time.perf_counter()
    index = HashIndex(evaluation)
    matches = index.query(registry)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    found = np.flatnonzero(matches.index >= 0)
    print(f"index: {n_registry:,} registry x {n_eval:,} evaluation hashes (threshold {THRESHOLD}): "
          f"{elapsed:.2f} s, peak {peak / 2**20:.0f} MiB (numpy, tracemalloc); "
          f"{len(found)} matches, planted found {np.isin(planted, found).sum()}/1000")

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


def real() -> None:
    paths = [p for ps in REAL_IMAGES.values() for p in ps]
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    start = time.perf_counter()
    stored = EvaluationHashes.of_images((str(i), p) for i, p in enumerate(paths))
    owner = np.array([int(i) for i in stored.image_ids])
    print(f"real: {len(paths)} images ({', '.join(f'{k} {len(v)}' for k, v in REAL_IMAGES.items())}), "
          f"{len(stored.hashes)} evaluation hashes in {time.perf_counter() - start:.1f} s")
    index = HashIndex(stored.hashes)
    caught = total = 0
    for name, transform in TRANSFORMS.items():
        matches = index.query([image_hash(transform(im)) for im in images])
        own = matches.index >= 0
        right = own & (owner[np.maximum(matches.index, 0)] == np.arange(len(images)))
        missed = [paths[i].name for i in np.flatnonzero(~own)]
        print(f"  {name:20s} caught {own.mean():7.2%} (matched to its own image {right.mean():7.2%})"
              + (f"; missed {', '.join(missed[:8])}{' ...' if len(missed) > 8 else ''}" if missed else ""))
        caught += int(own.sum())
        total += len(images)
    print(f"transformed copies caught: {caught}/{total} = {caught / total:.2%}")

    bases = np.array([image_hash(im) for im in images], dtype=np.uint64)
    d = np.bitwise_count(bases[:, None] ^ np.asarray(stored.hashes, dtype=np.uint64)[None, :])
    flagged = sorted({tuple(sorted((i, int(owner[j])))) for i, j in zip(*np.nonzero(d <= THRESHOLD)) if owner[j] != i})
    thumbs = [np.asarray(im.convert("L").resize((64, 64)), dtype=np.float32) for im in images]
    identical = [(i, j) for i, j in flagged if np.abs(thumbs[i] - thumbs[j]).mean() < 3]
    print(f"distinct real images flagged as near copies of each other: {len(flagged)} pairs, of which "
          f"{len(identical)} are pixel-identical or nearly (thumbnail mean difference < 3 grey levels); "
          f"{len(flagged) - len(identical)} false positives")
    for i, j in flagged:
        diff = np.abs(thumbs[i] - thumbs[j]).mean()
        print(f"    {paths[i].relative_to(SHARED)}  ~  {paths[j].relative_to(SHARED)}  thumbnail diff {diff:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=int, default=1_000_000)
    parser.add_argument("--eval", type=int, default=10_000)
    parser.add_argument("--no-real", action="store_true", help="Skip the real-data accuracy part.")
    args = parser.parse_args()
    scale(args.registry, args.eval)
    if not args.no_real:
        real()


if __name__ == "__main__":
    main()
