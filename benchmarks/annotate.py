"""Mask annotation round trip for 100 real SD-saliency-900 records on a real Label Studio
server (127.0.0.1, its own venv: ``$DAAD_LABEL_STUDIO`` or ``.venv-label-studio``):
``send`` (tasks + images + the existing masks as proposals), an annotator's 100 brush
annotations posted through Label Studio's API, and ``--load`` (download, decode, sync into the
manifest), next to a baseline in the same run: opening the same records in FiftyOne for
curation (what ``daad curate open`` does) and a sync of 100 App edits.

Then SAM proposals: the same records without their masks (their box kept as the prompt) sent
with ``--sam-model``, against the send above (existing masks as proposals) in the same run, and
SAM's time a record on its own. ``--sam tiny`` (default) is the test's random 64-pixel SAM: what
daad adds around the model; ``--sam base`` a random-weight model of ``facebook/sam-vit-base``'s
shape (same compute as the real one); or a folder with real SAM weights.

Run: ``python benchmarks/annotate.py [N] [--sam tiny|base|DIR] [--sam-records M]``. Prints
figures; asserts nothing. Uses a temp FiftyOne database and Label Studio data folder; stops both
servers by PID on exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import requests

from common import REPO, SOURCE_ROOTS  # noqa: F401  (puts the checkout on sys.path)
from daad.curate import labelstudio  # noqa: E402
from daad.curate.annotate import BRUSH, TASKS_INFO, load, send  # noqa: E402
from daad.curate.dataset import MASK_FIELD, open_records  # noqa: E402
from daad.curate.proposals import Prompt, SamProposer  # noqa: E402
from daad.curate.session import CurationSession  # noqa: E402
from daad.curate.sync import sync  # noqa: E402
from daad.registry.manifest import read_manifest, write_manifest  # noqa: E402
from daad.registry.registry import Registry  # noqa: E402
from daad.registry.roots import Roots  # noqa: E402
from daad.images import decode_image, read_file, to_rgb_array  # noqa: E402
from daad.taxonomy import Status  # noqa: E402
from tests.helpers.tiny_sam import build_tiny_sam  # noqa: E402


def sam_folder(kind: str, work: Path) -> Path:
    """The SAM folder the proposals use: the test's tiny one, a sam-vit-base-shaped one, or ``kind`` itself."""
    if kind == "tiny":
        return build_tiny_sam(work / "sam-tiny")
    if kind == "base":
        import torch
        from transformers import SamConfig, SamModel, SamProcessor
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

        torch.manual_seed(0)
        SamModel(SamConfig()).save_pretrained(work / "sam-base")
        SamProcessor(SamImageProcessorPil()).save_pretrained(work / "sam-base")
        return work / "sam-base"
    return Path(kind)


def main(n: int = 100, sam: str = "tiny", sam_records: int | None = None) -> None:
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

            # SAM proposals: the records without masks (boxes kept), in a registry of their own
            boxed = [replace(r, mask=None, area=None, status=Status.NEEDS_MASK) for r in records[:sam_records or n]]
            (tmp / "manifests-boxed").mkdir()
            write_manifest(tmp / "manifests-boxed" / "sd_saliency_900.jsonl", boxed)
            boxed_registry = Registry(tmp / "manifests-boxed", registry.roots)
            t = time.perf_counter()
            proposer = SamProposer.load(sam_folder(sam, tmp))
            sam_load = time.perf_counter() - t
            t = time.perf_counter()
            for record in boxed:  # SAM alone: decode the image, one box, one mask
                path = boxed_registry.image_path(record)
                proposer.mask(to_rgb_array(decode_image(read_file(path, record.id), record.id, path)),
                              Prompt(box=record.bbox))
            sam_alone = time.perf_counter() - t
            t = time.perf_counter()
            with_sam = send(session, boxed_registry, boxed, server, "bench-sam", proposer=proposer)
            sam_sent = time.perf_counter() - t

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
        m = len(boxed)
        print(f"SAM proposals ({sam}: {proposer.folder.name}, {sum(p.numel() for p in proposer.model.parameters()):,} "
              f"parameters, load {sam_load:.1f} s), {m} records with a box and no mask:")
        trip = (sent + loaded) / n
        print(f"  SAM alone (decode + prompt -> mask): {1000 * sam_alone / m:.0f} ms/record, "
              f"{sam_alone / m / trip:.2f}x the round trip without proposals ({1000 * trip:.0f} ms/record)")
        print(f"  send with proposals ({sum(p.sam_proposals for p in with_sam.projects)} SAM proposals): "
              f"{1000 * sam_sent / m:.0f} ms/record vs {1000 * sent / n:.0f} ms/record with the existing masks "
              f"({sam_sent / m / (sent / n):.1f}x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=100)
    parser.add_argument("--sam", default="tiny", help="tiny, base or a local SAM folder")
    parser.add_argument("--sam-records", type=int, help="records of the SAM pass (default: all N)")
    args = parser.parse_args()
    main(args.n, args.sam, args.sam_records)
