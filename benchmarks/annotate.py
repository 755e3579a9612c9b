"""Mask annotation round trip for 100 real SD-saliency-900 records on a real Label Studio
server (127.0.0.1, its own venv: ``$DAAD_LABEL_STUDIO`` or ``.venv-label-studio``):
``send`` (tasks + images + the existing masks as proposals), an annotator's 100 brush
annotations posted through Label Studio's API, and ``--load`` (download, decode, sync into the
manifest), next to a baseline in the same run: opening the same records in FiftyOne for
curation (what ``daad curate open`` does) and a sync of 100 App edits.

Run: ``python benchmarks/annotate.py [N]``. Prints figures; asserts nothing. Uses a temp
FiftyOne database and Label Studio data folder; stops both servers by PID on exit.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from common import REPO, SOURCE_ROOTS  # noqa: F401  (puts the checkout on sys.path)
from daad.curate import labelstudio  # noqa: E402
from daad.curate.annotate import BRUSH, TASKS_INFO, load, send  # noqa: E402
from daad.curate.dataset import MASK_FIELD, open_records  # noqa: E402
from daad.curate.session import CurationSession  # noqa: E402
from daad.curate.sync import sync  # noqa: E402
from daad.registry.manifest import read_manifest, write_manifest  # noqa: E402
from daad.registry.registry import Registry  # noqa: E402
from daad.registry.roots import Roots  # noqa: E402


def main(n: int = 100) -> None:
    from label_studio_sdk.converter.brush import mask2rle

    tmp = Path(tempfile.mkdtemp(prefix="daad-bench-annotate-"))
    os.environ["DAAD_CACHE_DIR"] = str(tmp / "cache")  # mask PNGs, nothing in the user's cache
    try:
        manifests = tmp / "manifests"
        manifests.mkdir()
        for name in ("sources.toml", "exclusions.toml"):
            shutil.copy(REPO / "manifests" / name, manifests / name)
        records = [r for r in read_manifest(REPO / "manifests" / "sd_saliency_900.jsonl") if r.duplicate_of is None][:n]
        write_manifest(manifests / "sd_saliency_900.jsonl", records)
        registry = Registry(manifests, Roots({"sd_saliency_900": SOURCE_ROOTS["sd_saliency_900"]}))
        drawn, classes = {}, {r.id: r.anomaly_class for r in records}
        for record in records:
            mask = record.mask.decode()
            mask[:20, :20] = 1  # the annotator's fix
            drawn[record.id] = mask

        with CurationSession(tmp / "db") as session:
            fo = session.fiftyone()
            t = time.perf_counter()
            server = labelstudio.start(session, tmp / "label-studio")
            start = time.perf_counter() - t

            t = time.perf_counter()
            dataset, _ = open_records(session, registry, records, "baseline", masks_dir=tmp / "masks")
            for sample in dataset.iter_samples(autosave=True, progress=False):
                sample[MASK_FIELD] = fo.Segmentation(mask=drawn[sample["record_id"]] * np.uint8(255))
            baseline_open = time.perf_counter() - t
            t = time.perf_counter()
            sync(session, "baseline", dry_run=True)
            baseline_sync = time.perf_counter() - t

            t = time.perf_counter()
            summary = send(session, registry, records, server, "bench")
            sent = time.perf_counter() - t

            tasks = {info["record_id"]: int(task) for task, info in fo.load_dataset("bench").info[TASKS_INFO].items()}
            t = time.perf_counter()
            for record_id, mask in drawn.items():
                height, width = mask.shape
                result = {"from_name": BRUSH, "to_name": "image", "type": "brushlabels", "original_width": width,
                          "original_height": height, "image_rotation": 0,
                          "value": {"format": "rle", "rle": mask2rle(mask * np.uint8(255)), "brushlabels": [classes[record_id]]}}
                requests.post(f"{server.url}/api/tasks/{tasks[record_id]}/annotations", json={"result": [result]},
                              headers={"Authorization": f"Token {server.token}"}, timeout=60).raise_for_status()
            annotate = time.perf_counter() - t

            t = time.perf_counter()
            report = load(session, server, "bench", who="bench")
            loaded = time.perf_counter() - t
            written = {r.id: r for r in read_manifest(manifests / "sd_saliency_900.jsonl")}
            exact = sum(written[rid].mask.decode().tolist() == mask.tolist() for rid, mask in drawn.items())

        print(f"records: {n} (real SD-saliency-900, 200x200)")
        print(f"Label Studio start (first: database migrations): {start:.1f} s")
        print(f"baseline: open in FiftyOne + set {n} masks: {baseline_open:.2f} s; sync --dry-run: {baseline_sync:.2f} s")
        print(f"send ({len(summary.projects)} project(s), {sum(p.proposals for p in summary.projects)} proposals): "
              f"{sent:.2f} s, {n / sent:.0f} rec/s, {sent / baseline_open:.1f}x baseline open")
        print(f"annotator posts {n} brush annotations (Label Studio API): {annotate:.2f} s")
        print(f"load ({len(report.loaded)} masks, {len(report.sync.changes)} changes applied, "
              f"{len(report.all_conflicts())} conflicts): {loaded:.2f} s, {n / loaded:.0f} rec/s, "
              f"{loaded / (baseline_open + baseline_sync):.1f}x baseline open+sync")
        print(f"masks in the manifest equal to the drawn ones: {exact}/{n}")
        print(f"round trip (send + load, without the annotator): {sent + loaded:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
