"""The registry-wide dedup's detail check (:func:`daad.registry.neardup.detail_correlation`): recall and false positives.

1. Recall: a sample of every origin's images (``--root ORIGIN=PATH`` where its files are, the shared
   data by default; ``--per-origin`` images each, distinct files, marked duplicates left out) and
   their transformed copies (``benchmarks/leakage.py``'s :data:`TRANSFORMS`): share caught by the hash
   and fine signature, and by the three checks, per transform and per origin.
2. False positives on near-uniform textures: :func:`tile_photographs` (photographs of one synthetic tile
   under other exposures and grain) whose hash and fine signature match, and how many of those the
   detail check passes, next to brighter JPEG copies of the same photographs (which it must pass).
3. False positives on real pairs (``--pairs FILE``: ``{"marks": {record id: kept id or [kept id, ...]},
   "kinds": {record id: kind}}``, e.g. a dry run's marks made without the detail check): per kind
   (the record's origin where no kind is given), the pairs the detail check still passes.

Run: ``python benchmarks/dedup_detail.py [--root ORIGIN=PATH ...] [--per-origin 30] [--pairs FILE]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

if __package__:
    from benchmarks.common import REPO, SOURCE_ROOTS
    from benchmarks.leakage import TRANSFORMS, brightness, jpeg, tile_photographs
else:
    from common import REPO, SOURCE_ROOTS  # puts the checkout on sys.path
    from leakage import TRANSFORMS, brightness, jpeg, tile_photographs

from daad.processes import default_workers, process_map  # noqa: E402
from daad.registry.manifest import read_manifest  # noqa: E402
from daad.registry.neardup import (  # noqa: E402
    DETAIL_THRESHOLD, FINE_THRESHOLD, THRESHOLD, VARIANTS, detail_correlation, detail_thumbnails, fine_distance,
    fine_signature, image_hash, query_detail, query_signature, variant_hashes,
)


def detail_of_copy(stored: Image.Image, query: Image.Image) -> float | None:
    """Best detail correlation over the variants of ``stored`` that ``query``'s hash and fine signature
    match (``None``: none do, the first two checks miss it)."""
    variants, fine = variant_hashes(stored), fine_signature(stored)
    h = image_hash(query)
    candidates = [v for v in range(VARIANTS) if (variants[v] ^ h).bit_count() <= THRESHOLD]
    if not candidates:
        return None
    signature = query_signature(query)
    confirmed = [v for v in candidates if fine_distance(fine, v, signature) <= FINE_THRESHOLD]
    if not confirmed:
        return None
    detail, qdetail = detail_thumbnails(stored), query_detail(query)
    return max(detail_correlation(detail, v, qdetail) for v in confirmed)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _copies(_: None, path: Path) -> dict[str, float | None]:
    image = _open(path)
    return {name: detail_of_copy(image, transform(image)) for name, transform in TRANSFORMS.items()}


def _pair(_: None, paths: tuple[Path, Path]) -> float | None:
    return detail_of_copy(_open(paths[1]), _open(paths[0]))


def recall(records: dict[str, dict], roots: dict[str, Path], per_origin: int, workers: int) -> None:
    rng = random.Random(0)
    sample: list[tuple[str, Path]] = []
    for origin in sorted(roots):
        files = {r["sha256"]: r["path"] for r in records.values() if r["origin"] == origin and not r["duplicate"]}
        chosen = rng.sample(sorted(files.values()), min(per_origin, len(files)))
        sample += [(origin, roots[origin] / p) for p in chosen]
    results = list(process_map(_copies, None, [p for _, p in sample], workers))
    by_transform, by_origin = defaultdict(list), defaultdict(list)
    for (origin, _), found in zip(sample, results):
        for name, corr in found.items():
            by_transform[name].append(corr)
            by_origin[origin].append(corr)

    def caught(values: list[float | None]) -> str:
        hashed = sum(v is not None for v in values)
        detail = sum(v is not None and v >= DETAIL_THRESHOLD for v in values)
        return f"hash+fine {hashed / len(values):7.2%}, with detail {detail / len(values):7.2%} ({len(values) - detail} missed)"

    print(f"recall: {len(sample)} images ({', '.join(f'{o} {n}' for o, n in sorted(Counter(o for o, _ in sample).items()))}), "
          f"{len(TRANSFORMS)} transforms each; detail threshold {DETAIL_THRESHOLD}")
    for name, values in by_transform.items():
        print(f"  {name:24s} {caught(values)}")
    for origin, values in sorted(by_origin.items()):
        print(f"  {origin:24s} {caught(values)}")
    every = [v for values in by_transform.values() for v in values]
    confirmed = np.array([v for v in every if v is not None])
    print(f"  all {len(every)} copies: {caught(every)}; detail correlation of those the first two checks "
          f"confirm: 0.5 % quantile {np.quantile(confirmed, 0.005):.2f}, 1 % {np.quantile(confirmed, 0.01):.2f}, "
          f"median {np.median(confirmed):.2f}")


def textures() -> None:
    print("near-uniform textures: 40 photographs per tile (other exposure, grain, noise, shift)")
    for seed, (grain, amplitude) in enumerate(((1, 6), (2, 6), (1, 4), (2, 4), (4, 8))):
        photos = tile_photographs(100 + seed, 40, grain=grain, amplitude=amplitude)
        pairs = [detail_of_copy(a, b) for i, a in enumerate(photos) for j, b in enumerate(photos) if i != j]
        confirmed = [v for v in pairs if v is not None]
        copies = [detail_of_copy(p, jpeg(brightness(p, 25), 40)) for p in photos]
        print(f"  grain {grain} px, ±{amplitude}: {len(confirmed)} of {len(pairs)} ordered pairs pass hash and fine "
              f"signature, {sum(v >= DETAIL_THRESHOLD for v in confirmed)} also the detail check"
              f"{f' (max correlation {max(confirmed):.2f})' if confirmed else ''}; brighter JPEG copies caught "
              f"{sum(v is not None and v >= DETAIL_THRESHOLD for v in copies)}/{len(photos)}")


def pairs(path: Path, records: dict[str, dict], roots: dict[str, Path], workers: int) -> None:
    data = json.loads(path.read_text())
    marks = {rid: kept if isinstance(kept, str) else kept[0] for rid, kept in data["marks"].items()}
    kinds = data.get("kinds", {})
    todo = [(rid, kept) for rid, kept in sorted(marks.items())
            if rid in records and kept in records and {records[rid]["origin"], records[kept]["origin"]} <= set(roots)]
    files = [tuple(roots[records[r]["origin"]] / records[r]["path"] for r in pair) for pair in todo]
    results = list(process_map(_pair, None, files, workers))
    by_kind = defaultdict(list)
    for (rid, _), corr in zip(todo, results):
        by_kind[kinds.get(rid, records[rid]["origin"])].append(corr)
    print(f"pairs marked in {path} ({len(todo)} of {len(marks)} with both files here): those the detail check passes")
    for kind, values in sorted(by_kind.items()):
        direct = [v for v in values if v is not None]
        print(f"  {kind:32s} {len(values):5d} pairs, {len(direct):5d} a direct hash+fine match, "
              f"{sum(v >= DETAIL_THRESHOLD for v in direct):5d} pass the detail check"
              + (f" (correlation median {np.median(direct):.2f}, max {max(direct):.2f})" if direct else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", action="append", default=[], metavar="ORIGIN=PATH")
    parser.add_argument("--per-origin", type=int, default=30)
    parser.add_argument("--pairs", type=Path)
    parser.add_argument("--no-textures", action="store_true")
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    roots = {**SOURCE_ROOTS, **{o: Path(p) for o, p in (x.split("=", 1) for x in args.root)}}
    records = {}
    for origin in roots:
        for r in read_manifest(REPO / "manifests" / f"{origin}.jsonl"):
            records[r.id] = {"origin": origin, "path": r.image.path, "sha256": r.image.sha256,
                             "duplicate": r.duplicate_of is not None}
    if not args.no_textures:
        textures()
    recall(records, roots, args.per_origin, args.workers)
    if args.pairs:
        pairs(args.pairs, records, roots, args.workers)


if __name__ == "__main__":
    main()
