"""Ingest throughput per real source: records/s of each loader (reading, decoding,
hashing, mask parsing and RLE encoding), next to a same-run baseline that only reads and
sha256-hashes the same image files (the floor any loader pays).

Run: ``python benchmarks/ingest.py [--repeat 3]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED  # noqa: E402  (puts the checkout on sys.path)
os.environ.setdefault("DAAD_CACHE_DIR", tempfile.mkdtemp(prefix="daad-bench-cache-"))

from daad.loaders import get_loader  # noqa: E402
from daad.loaders.base import Skipped  # noqa: E402

SOURCES = {
    "sd_saliency_900": (SHARED / "sd-saliency-900", ("*.bmp",)),
    "crackforest": (SHARED / "crackforest", ("*.jpg",)),
    "kolektorsdd": (SHARED / "kolektorsdd-yolo", ("*.jpg",)),
    "daad_online_sources": (SHARED / "daad-online-sources", ("*.xlsx",)),
}


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _ingest(origin: str, root: Path) -> tuple[int, int]:
    records = skipped = 0
    for item in get_loader(origin).iter_records(root):
        skipped += isinstance(item, Skipped)
        records += not isinstance(item, Skipped)
    return records, skipped


def _hash_files(root: Path, patterns: tuple[str, ...]) -> int:
    n = 0
    for pattern in patterns:
        for path in root.rglob(pattern):
            hashlib.sha256(path.read_bytes()).hexdigest()
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    print(f"{'origin':22} {'records':>8} {'skipped':>8} {'seconds':>8} {'rec/s':>9} {'hash-only s':>12} {'ratio':>6}")
    for origin, (root, patterns) in SOURCES.items():
        if not root.is_dir():
            print(f"{origin:22} (no data at {root})")
            continue
        seconds, (records, skipped) = _best(lambda: _ingest(origin, root), args.repeat)
        baseline, _ = _best(lambda: _hash_files(root, patterns), args.repeat)
        print(f"{origin:22} {records:8d} {skipped:8d} {seconds:8.2f} {records / seconds:9.1f} "
              f"{baseline:12.3f} {seconds / baseline:6.1f}x")


if __name__ == "__main__":
    main()
