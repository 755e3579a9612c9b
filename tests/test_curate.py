"""Curation with the real FiftyOne database on real SD-saliency-900 records: open, a
simulated curator, sync (dry run, apply, idempotent), the next build, and a conflict."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import datasets
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SD_ROOT
from daad.dataset.build import build
from daad.cli.app import app as cli
from daad.curate.dataset import open_records
from daad.registry.manifest import read_manifest, write_manifest
from daad.record import Record
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.taxonomy import ANOMALY_CLASSES, Status
from helpers.curation import PER_CLASS, shared_session, subset_manifests

NAME = "curate-test"


@pytest.fixture(scope="module")
def session():
    return shared_session()


@pytest.fixture(scope="module")
def opened(session, tmp_path_factory):
    """30 real records opened in FiftyOne: (registry, dataset, records by id, masks dir)."""
    base = tmp_path_factory.mktemp("curate")
    registry = Registry(subset_manifests(base / "manifests"), Roots({"sd_saliency_900": SD_ROOT}))
    records = {r.id: r for r in registry.records()}
    dataset, summary = open_records(session, registry, records.values(), NAME, masks_dir=base / "masks")
    assert (summary.added, summary.samples, summary.skipped) == (30, 30, [])
    return registry, dataset, records, base


def test_open_real_records(opened):
    registry, dataset, records, _ = opened
    assert len(dataset) == 3 * PER_CLASS
    assert sorted(dataset.distinct("anomaly_class.label")) == ["impurity", "scratch", "stain"]
    assert dataset.count_sample_tags() == {"status:accepted": 30}
    assert dataset.mask_targets["ground_truth"] == {255: "anomaly"}
    for sample in dataset:
        record = records[sample["record_id"]]
        assert Path(sample.filepath) == registry.image_path(record) and Path(sample.filepath).is_file()
        assert (sample["origin"], sample["licence"], sample["native_label"], sample["source"]) == (
            record.origin, record.licence, record.native_label, str(record.source))
        assert sample["anomaly_class"].label == record.anomaly_class
        png = cv2.imread(sample["ground_truth"].mask_path, cv2.IMREAD_UNCHANGED)
        assert png.shape == (record.height, record.width) == (200, 200) and png.dtype == np.uint8
        assert set(np.unique(png)) == {0, 255}
        np.testing.assert_array_equal(png // 255, record.mask.decode())


def test_reopen_updates_instead_of_duplicating(session, opened):
    registry, dataset, records, base = opened
    _, summary = open_records(session, registry, records.values(), NAME, masks_dir=base / "masks")
    assert (summary.kept, summary.added, summary.refreshed, summary.samples) == (30, 0, 0, 30)
    assert len(session.fiftyone().load_dataset(NAME)) == 30


def _sync(session, *args: str):
    return CliRunner().invoke(
        cli, ["curate", "sync", "--name", NAME, "--database-dir", str(session.database_dir), "--who", "tester", *args]
    )


def test_curator_edits_sync_into_manifests_and_build(session, opened, tmp_path):
    registry, dataset, records, base = opened
    fo = session.fiftyone()
    manifest = registry.manifests_dir / "sd_saliency_900.jsonl"
    ids = sorted(records)
    rejected_id, relabelled_id, remasked_id = ids[0], ids[11], ids[22]
    assert records[relabelled_id].anomaly_class != "crack"

    # A curator at work, through FiftyOne's Python API (what the App's tagging and label edits do).
    sample = dataset.one(fo.ViewField("record_id") == rejected_id)
    sample.tags += ["reject", "reason:blurry"]
    sample.save()
    sample = dataset.one(fo.ViewField("record_id") == relabelled_id)
    sample["anomaly_class"].label = "crack"
    sample.save()
    replacement = np.zeros((200, 200), np.uint8)
    replacement[40:90, 60:150] = 255
    new_mask = tmp_path / "fixed_mask.png"
    cv2.imwrite(str(new_mask), replacement)
    sample = dataset.one(fo.ViewField("record_id") == remasked_id)
    sample["ground_truth"] = fo.Segmentation(mask_path=str(new_mask))
    sample.save()

    before = manifest.read_bytes()
    dry = _sync(session, "--dry-run")
    assert dry.exit_code == 0, dry.output
    changed = [line for line in dry.output.splitlines() if line.startswith("sd_saliency_900/")]
    assert changed == [
        f"{rejected_id}: status accepted -> rejected (blurry)",
        f"{relabelled_id}: anomaly_class {records[relabelled_id].anomaly_class} -> crack",
        f"{remasked_id}: mask area {records[remasked_id].area} -> {50 * 90}, "
        f"bbox {list(records[remasked_id].bbox)} -> [60, 40, 90, 50]",
    ]
    assert "would apply 3 change(s); 0 conflict(s); 27 unchanged" in dry.output
    assert manifest.read_bytes() == before and not (registry.manifests_dir / "curation.log.jsonl").exists()

    applied = _sync(session)
    assert applied.exit_code == 0, applied.output
    assert "applied 3 change(s)" in applied.output
    after = {r.id: r for r in read_manifest(manifest)}
    assert (after[rejected_id].status, after[rejected_id].reason, after[rejected_id].curated) == (
        Status.REJECTED, "blurry", ("status",))
    assert after[relabelled_id].anomaly_class == "crack"
    assert after[relabelled_id].native_label == records[relabelled_id].native_label
    assert after[relabelled_id].curated == ("anomaly_class",)
    np.testing.assert_array_equal(after[remasked_id].mask.decode(), replacement // 255)
    assert (after[remasked_id].bbox, after[remasked_id].area, after[remasked_id].curated) == (
        (60, 40, 90, 50), 4500, ("mask",))
    untouched = set(ids) - {rejected_id, relabelled_id, remasked_id}
    assert all(after[i] == records[i] for i in untouched)

    log = [json.loads(line) for line in (registry.manifests_dir / "curation.log.jsonl").read_text().splitlines()]
    assert [(e["id"], e["fields"], e["who"]) for e in log] == [
        (rejected_id, ["status"], "tester"), (relabelled_id, ["anomaly_class"], "tester"), (remasked_id, ["mask"], "tester")]
    assert log[0]["diff"]["status"] == {"before": {"status": "accepted", "reason": None},
                                        "after": {"status": "rejected", "reason": "blurry"}}
    assert dataset.one(fo.ViewField("record_id") == rejected_id).tags.count("status:rejected") == 1

    # Idempotent: a second sync finds nothing to do and writes nothing.
    synced = manifest.read_bytes()
    again = _sync(session)
    assert again.exit_code == 0 and "applied 0 change(s); 0 conflict(s); 30 unchanged" in again.output
    assert manifest.read_bytes() == synced and len(log) == 3

    # The next build reflects the decisions.
    out = tmp_path / "built"
    summary = build(registry, out, progress=False)
    assert summary.accepted == 29 and summary.skipped == {"status:rejected": 1}
    ds = datasets.load_dataset(str(out), split="train")
    rows = {row["id"]: row for row in ds}
    assert rejected_id not in rows and len(rows) == 29
    assert ANOMALY_CLASSES[rows[relabelled_id]["anomaly_class"]] == "crack"
    np.testing.assert_array_equal(np.asarray(rows[remasked_id]["mask"].convert("L")), replacement)


def test_conflict_is_reported_not_overwritten(session, tmp_path):
    registry = Registry(subset_manifests(tmp_path / "manifests"), Roots({"sd_saliency_900": SD_ROOT}))
    records = sorted(registry.records(), key=lambda r: r.id)[:3]
    dataset, _ = open_records(session, registry, records, "curate-conflict", masks_dir=tmp_path / "masks")
    fo = session.fiftyone()
    target = records[1].id
    sample = dataset.one(fo.ViewField("record_id") == target)
    sample.tags += ["reject", "reason:wrong_mask"]
    sample.save()

    # Someone edits the manifest record after it was opened.
    manifest = registry.manifests_dir / "sd_saliency_900.jsonl"
    edited = [r if r.id != target else Record.from_json(r.to_json() | {"note": "edited upstream"})
              for r in read_manifest(manifest)]
    write_manifest(manifest, edited)
    before = manifest.read_bytes()

    result = CliRunner().invoke(cli, ["curate", "sync", "--name", "curate-conflict", "--database-dir",
                                      str(session.database_dir), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["changes"] == [] and [c["id"] for c in report["conflicts"]] == [target]
    assert "changed since" in report["conflicts"][0]["reason"]
    assert manifest.read_bytes() == before
    assert not (registry.manifests_dir / "curation.log.jsonl").exists()


def test_contradictory_or_unexplained_decisions_are_refused(session, tmp_path):
    registry = Registry(subset_manifests(tmp_path / "manifests"), Roots({"sd_saliency_900": SD_ROOT}))
    records = sorted(registry.records(), key=lambda r: r.id)[:2]
    dataset, _ = open_records(session, registry, records, "curate-refused", masks_dir=tmp_path / "masks")
    fo = session.fiftyone()
    first, second = (dataset.one(fo.ViewField("record_id") == r.id) for r in records)
    first.tags += ["reject"]
    first.save()
    second.tags += ["accept", "needs_review"]
    second.save()
    from daad.curate.sync import sync

    report = sync(session, "curate-refused")
    assert report.changes == [] and not report.applied
    reasons = {c.record_id: c.reason for c in report.conflicts}
    assert "needs a reason" in reasons[records[0].id] and "contradictory" in reasons[records[1].id]


def _open_cli(session, *args: str):
    return CliRunner().invoke(cli, ["curate", "open", "--no-app", "--database-dir", str(session.database_dir), *args])


def test_cli_open_selects_records(session, tmp_path):
    manifests = subset_manifests(tmp_path / "manifests")
    args = ["--manifests", str(manifests), "--root", f"sd_saliency_900={SD_ROOT}", "--name", "curate-cli"]
    result = _open_cli(session, *args, "--classes", "scratch", "--status", "accepted")
    assert result.exit_code == 0, result.output
    assert "curate-cli: 10 samples (added 10" in result.output
    dataset = session.fiftyone().load_dataset("curate-cli")
    assert dataset.distinct("anomaly_class.label") == ["scratch"]
    again = _open_cli(session, *args, "--classes", "scratch", "--classes", "stain")
    assert again.exit_code == 0 and "20 samples (added 10, refreshed 0, kept 10, removed 0)" in again.output


def test_open_generated_dataset(session, tmp_path):
    from daad.curate.fields import read_mask_file
    from daad.synthesis.base import Synthesis
    from daad.synthesis.output import write_generated

    registry = Registry(subset_manifests(tmp_path / "manifests"), Roots({"sd_saliency_900": SD_ROOT}))
    view = registry.view(evaluation="none")
    records = sorted(view, key=lambda r: r.id)[:4]
    rows = [Synthesis(view.read_image(r), view.read_mask(r), r.anomaly_class, f"target/{i}", (r.id,), {"i": i})
            for i, r in enumerate(records)]
    out = tmp_path / "generated"
    write_generated(out, rows, generator="copy", params={"k": 1}, seed=7, evaluation="none", progress=False)

    for _ in range(2):  # re-opening refreshes, never duplicates
        result = _open_cli(session, "--generated", str(out), "--name", "curate-generated")
        assert result.exit_code == 0, result.output
    dataset = session.fiftyone().load_dataset("curate-generated")
    assert len(dataset) == 4
    assert dataset.info["generator"] == "copy" and dataset.info["params"] == {"k": 1} and dataset.info["seed"] == 7
    for sample, row, record in zip(dataset.sort_by("record_id"), rows, records):
        assert (sample["generator"], sample["target_id"], sample["source_ids"]) == ("copy", row.target_id, [record.id])
        assert sample["anomaly_class"].label == record.anomaly_class and json.loads(sample["details"]) == row.details
        np.testing.assert_array_equal(read_mask_file(sample["ground_truth"].mask_path), row.mask)
        assert cv2.imread(sample.filepath).shape == (200, 200, 3)
