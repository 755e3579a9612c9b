"""Records, RLE masks, ingest with curation kept, registry views, CLI tables, generated output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import datasets
import numpy as np
import pytest

from conftest import REPO, SD_ROOT, committed_without_marks
from daad.registry.catalogue import Catalogue
from daad.errors import LeakageError
from daad.registry.exclusion import ExclusionError
from daad.sources.ingest import ingest
from daad.loaders import get_loader
from daad.registry.manifest import read_manifest
from daad.masks import RLE, decode_runs
from daad.record import Record
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.base import Synthesis
from daad.synthesis.output import generator_info, read_generated, write_generated
from daad.taxonomy import Status


def test_rle_round_trip_matches_pycocotools_geometry():
    rng = np.random.default_rng(7)
    for _ in range(50):
        h, w = rng.integers(1, 120, 2)
        mask = rng.random((h, w)) < rng.random() * 0.3
        rle = RLE.from_json(RLE.encode(mask).to_json())
        assert np.array_equal(rle.decode(), mask.astype(np.uint8))
        assert rle.area() == mask.sum()
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert rle.bbox() == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


@pytest.mark.parametrize("counts", ["~~", "0", "PP", "PPPPPPPPPPPPP1", "0@", "ooooooooooo?0"])
def test_bad_rle_is_refused(counts):
    with pytest.raises(ValueError, match="mask RLE"):
        RLE.from_json({"size": [10, 10], "counts": counts})


def test_rles_decoded_together_are_decoded_as_one_by_one():
    rng = np.random.default_rng(3)
    masks = [rng.random((h, w)) < p for h, w, p in ((1, 1, 1), (9, 4, 0.5), (30, 70, 0.05), (5, 5, 0.0), (12, 3, 0.9))]
    good = [RLE.encode(m).counts for m in masks]
    bad = ["~~", "PP", "0@"]  # a character out of range, a run cut short, a negative run
    short = ["0", ""]  # valid codes, but of no mask of these sizes
    mixed = [good[0], bad[0], good[1], short[0], bad[1], good[2], short[1], good[3], bad[2], good[4]]
    together = decode_runs(mixed)
    for counts, runs in zip(mixed, together):
        (alone,) = decode_runs([counts])
        assert type(runs) is type(alone) and (runs == alone if isinstance(runs, str) else np.array_equal(runs, alone))
    assert [isinstance(r, str) for r in together] == [c in bad for c in mixed]
    assert [r.tolist() for c, r in zip(mixed, together) if c in short] == [[0], []]
    for mask, counts, runs in zip(masks, good, [r for c, r in zip(mixed, together) if c in good]):
        rle = RLE.from_json({"size": list(mask.shape), "counts": counts}, runs)
        assert np.array_equal(rle.decode(), mask.astype(np.uint8))  # pycocotools agrees with the runs' total
        assert runs[1::2].sum() == mask.sum() and runs.sum() == mask.size


def test_record_json_round_trip_and_checks():
    record = next(iter(read_manifest(REPO / "manifests" / "sd_saliency_900.jsonl")))
    assert Record.from_json(record.to_json()) == record
    bad = record.to_json() | {"area": record.area + 1}
    with pytest.raises(ValueError, match="area"):
        Record.from_json(bad)
    with pytest.raises(ValueError, match="unknown source"):
        Record.from_json(record.to_json() | {"source": "forum"})
    with pytest.raises(ValueError, match="does not start with its origin"):
        Record.from_json(record.to_json() | {"origin": "crackforest"})


def test_real_ingest_counts_and_idempotence(tmp_path, sd_manifests):
    loader = get_loader("sd_saliency_900")
    manifest = tmp_path / "sd_saliency_900.jsonl"
    first = ingest(loader.iter_records(SD_ROOT), manifest)
    assert first.accepted == 900 and first.added == 900 and first.written
    assert first.statuses == {"accepted": 900}
    # The committed manifest is exactly what ingest produces from the real data.
    assert manifest.read_bytes() == committed_without_marks("sd_saliency_900")
    before = manifest.stat().st_mtime_ns
    again = ingest(loader.iter_records(SD_ROOT), manifest)
    assert (again.added, again.removed, again.changed, again.unchanged) == (0, 0, 0, 900)
    assert not again.written and manifest.stat().st_mtime_ns == before


def test_reingest_keeps_curation(tmp_path):
    loader = get_loader("sd_saliency_900")
    manifest = tmp_path / "sd_saliency_900.jsonl"
    ingest(loader.iter_records(SD_ROOT), manifest)
    records = list(read_manifest(manifest))
    new_mask = RLE.encode(np.pad(np.ones((10, 10), np.uint8), ((0, 190), (0, 190))))
    curated = {
        records[0].id: replace(records[0], status=Status.REJECTED, reason="not an anomaly", curated=("status",)),
        records[1].id: replace(records[1], anomaly_class="crack", curated=("anomaly_class",)),
        records[2].id: replace(records[2], curated=("mask",)).with_mask(new_mask),
    }
    from daad.registry.manifest import write_manifest

    write_manifest(manifest, [curated.get(r.id, r) for r in records[1:]] + [curated[records[0].id]])
    report = ingest(loader.iter_records(SD_ROOT), manifest)
    assert (report.added, report.removed, report.changed) == (0, 0, 0)
    after = {r.id: r for r in read_manifest(manifest)}
    assert after[records[0].id].status == "rejected" and after[records[0].id].reason == "not an anomaly"
    assert after[records[1].id].anomaly_class == "crack" and after[records[1].id].native_label == "In"
    assert after[records[2].id].mask == new_mask and after[records[2].id].area == 100


def test_view_requires_evaluation_and_excludes_its_origin(sd_manifests):
    registry = Registry(sd_manifests, Roots({"sd_saliency_900": SD_ROOT}))
    with pytest.raises(TypeError):
        registry.view()  # no silent default: the evaluation target must be stated
    with pytest.raises(ExclusionError, match="unknown evaluation dataset 'nope'"):
        registry.view(evaluation="nope")
    assert list(registry.view(evaluation="sd_saliency_900")) == []
    scratches = list(registry.view(evaluation="none", classes=["scratch"]))
    assert len(scratches) == 297 and {r.native_label for r in scratches} == {"Sc"}
    view = registry.view(evaluation="kolektorsdd", classes=["impurity"])
    record = next(iter(view))
    image, mask = view.read_image(record), view.read_mask(record)
    assert image.shape == (200, 200, 3) and mask.shape == (200, 200) and mask.sum() == record.area
    assert isinstance(LeakageError("x"), Exception)


def _cli(*args, cwd=None):
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "daad", *args], env=env, capture_output=True, text=True, cwd=cwd)


def test_cli_validate_stats_json(sd_manifests, tmp_path):
    ok = _cli("validate", "--manifests", str(sd_manifests), "--root", f"sd_saliency_900={SD_ROOT}", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["accepted"] == 900
    stats = _cli("stats", "--manifests", str(sd_manifests), "--json")
    rows = json.loads(stats.stdout)
    # In_210, Pa_105, Sc_243, Sc_247, Sc_295 are near copies of In_188, Pa_101, Sc_221, Sc_232, Sc_27: not counted
    assert {(r["anomaly_class"], r["records"]) for r in rows} == {("impurity", 299), ("stain", 299), ("scratch", 297)}
    table = _cli("stats", "--manifests", str(sd_manifests))
    assert "scratch" in table.stdout and "895" in table.stdout
    assert "5 near copies of other records left out" in " ".join(table.stdout.split())
    missing = _cli("validate", "--manifests", str(sd_manifests), "--root", f"sd_saliency_900={tmp_path}", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["rejected_by_reason"] == {"missing": 900}


def test_generated_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        mask = np.zeros((32, 48), np.uint8)
        mask[4 + i : 10 + i, 8:20] = 1
        rows.append(Synthesis(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8), mask, "crack", f"t/{i}", ("sd_saliency_900/Sc_1",), {"scale": "small", "str": 0.2}))
    out = tmp_path / "gen"
    summary = write_generated(
        out, rows, generator="test", params={"k": 1}, seed=3, evaluation="kolektorsdd",
        input_licences={"sd_saliency_900/Sc_1": "CC-BY-NC-SA-4.0"}, progress=False,
    )
    assert summary.rows == 5
    back = list(read_generated(out))
    assert [r["target_id"] for r in back] == [f"t/{i}" for i in range(5)]
    assert np.array_equal(back[2]["image"], rows[2].image) and np.array_equal(back[2]["mask"], rows[2].mask)
    assert back[0]["details"] == {"scale": "small", "str": 0.2} and back[0]["source_ids"] == ["sd_saliency_900/Sc_1"]
    info = generator_info(out)
    assert info["evaluation"] == "kolektorsdd" and info["licences"] == {"CC-BY-NC-SA-4.0": 5, "unknown": 5}
    card = (out / "README.md").read_text()
    assert "CC-BY-NC-SA-4.0" in card and "Restricted" in card
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.features["anomaly_class"].int2str(ds[0]["anomaly_class"]) == "crack"


def test_catalogue_notes_are_prose_without_escapes_or_line_breaks():
    """A note wrapped in sources.toml ends its lines with the TOML line continuation ``\\``, not ``\\\\``."""
    catalogue = Catalogue.load(REPO / "manifests")
    for entry in catalogue:
        assert "\\" not in entry.notes and "\n" not in entry.notes, entry.id
