"""Curation throughput on all 900 real SD-saliency-900 records: ``open`` (first and
re-open), ``sync --dry-run`` over unchanged samples, next to a baseline that only
decodes the masks and writes their PNGs (the floor of what ``open`` must do).

Run: ``python benchmarks/curate.py``. Prints figures; asserts nothing. Uses a temp
FiftyOne database and stops its mongod on exit.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, SHARED  # noqa: E402  (puts the checkout on sys.path)

from daad.curate.dataset import file_stem, open_records, write_mask_png  # noqa: E402
from daad.curate.session import CurationSession  # noqa: E402
from daad.curate.sync import sync  # noqa: E402
from daad.registry import Registry  # noqa: E402
from daad.registry.roots import Roots  # noqa: E402

SD_ROOT = SHARED / "sd-saliency-900"


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="daad-bench-curate-"))
    try:
        manifests = tmp / "manifests"
        manifests.mkdir()
        for name in ("sd_saliency_900.jsonl", "sources.toml", "exclusions.toml"):
            shutil.copy(REPO / "manifests" / name, manifests / name)
        registry = Registry(manifests, Roots({"sd_saliency_900": SD_ROOT}))
        records = list(registry.records())

        t = time.perf_counter()
        for record in records:
            write_mask_png(record.mask.decode(), tmp / "baseline", file_stem(record.id))
        baseline = time.perf_counter() - t

        with CurationSession(tmp / "db") as session:
            t = time.perf_counter()
            session.fiftyone()
            startup = time.perf_counter() - t
            t = time.perf_counter()
            open_records(session, registry, records, "bench", masks_dir=tmp / "masks")
            first = time.perf_counter() - t
            t = time.perf_counter()
            open_records(session, registry, records, "bench", masks_dir=tmp / "masks")
            reopen = time.perf_counter() - t
            t = time.perf_counter()
            report = sync(session, "bench", dry_run=True)
            dry = time.perf_counter() - t
        n = len(records)
        print(f"records: {n}")
        print(f"mongod start + fiftyone import: {startup:.1f} s")
        print(f"baseline (decode RLE + write mask PNGs): {baseline:.2f} s, {n / baseline:.0f} rec/s")
        print(f"open (new dataset): {first:.2f} s, {n / first:.0f} rec/s, {first / baseline:.1f}x baseline")
        print(f"re-open (unchanged): {reopen:.2f} s, {n / reopen:.0f} rec/s")
        print(f"sync --dry-run (unchanged, {report.unchanged} samples): {dry:.2f} s, {n / dry:.0f} rec/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
