"""daad build on the real SD-saliency-900 source: loadable, deterministic, atomic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest

from conftest import REPO, SD_ROOT, SOURCE_ROOTS, copy_manifests
from daad.registry import roots as roots_module
from daad.dataset.build import BuildSummary, build
from daad.errors import ManifestError
from daad.registry.manifest import read_manifest, write_manifest
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.taxonomy import ANOMALY_CLASSES, Status


def _registry(manifests: Path) -> Registry:
    return Registry(manifests, Roots({"sd_saliency_900": SD_ROOT}))


def test_real_build_loads_with_datasets(sd_manifests, tmp_path):
    out = tmp_path / "daad"
    summary = build(_registry(sd_manifests), out, progress=False)
    # five pictures of the release are near copies of five others (daad dedup marked them)
    assert summary.accepted == 895 and not summary.rejected
    assert summary.skipped == {"duplicate:sd_saliency_900": 5}

    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == 895
    assert ds.features["anomaly_class"].names == list(ANOMALY_CLASSES)
    assert isinstance(ds.features["image"], datasets.Image) and isinstance(ds.features["mask"], datasets.Image)
    classes = {ds.features["anomaly_class"].int2str(c) for c in ds["anomaly_class"]}
    assert classes == {"impurity", "stain", "scratch"}

    row = ds[0]
    mask = np.asarray(row["mask"])
    assert set(np.unique(mask)) == {0, 255}
    assert row["mask"].size == row["image"].size
    # Image bytes are stored as published (BMP), not re-encoded; the image feature decodes them as RGB.
    assert row["image"].mode == "RGB" and ds.features["image"].mode == "RGB"
    raw = (SD_ROOT / "Source Images" / f"{row['id'].split('/')[1]}.bmp").read_bytes()
    table = ds.with_format("arrow")[0:1]
    assert table.column("image")[0]["bytes"].as_py() == raw

    scratch = datasets.load_dataset(str(out), "scratch", split="train")
    assert scratch.num_rows == 297
    assert set(scratch["native_label"]) == {"Sc"}

    # Mask pixels equal the published ground truth.
    from PIL import Image

    sample = scratch[5]
    truth = np.asarray(Image.open(SD_ROOT / "Ground truth" / f"{sample['id'].split('/')[1]}.png").convert("L")) > 127
    assert np.array_equal(np.asarray(sample["mask"]) > 0, truth)

    card = (out / "README.md").read_text()
    assert "configs:" in card and "dataset_info:" in card
    assert "| scratch | existing_dataset | LicenseRef-SD-saliency-900-research | 297 |" in card
    assert "| duplicate:sd_saliency_900 | 5 |" in card
    assert "@article{song2020saliency" in card


def test_rebuild_is_byte_identical_whatever_the_workers(sd_manifests, tmp_path, monkeypatch):
    a, b, c = tmp_path / "a" / "daad", tmp_path / "b" / "daad", tmp_path / "c" / "daad"
    build(_registry(sd_manifests), a, progress=False, workers=1)
    build(_registry(sd_manifests), b, progress=False, workers=2)
    monkeypatch.setattr(roots_module, "_openat2", lambda: None)  # images found by resolving paths instead
    build(_registry(sd_manifests), c, progress=False, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) >= 5
    for other in (b, c):
        assert sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file()) == files
        for rel in files:
            assert (a / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_rebuild_in_place_replaces_output(sd_manifests, tmp_path):
    out = tmp_path / "daad"
    build(_registry(sd_manifests), out, progress=False)
    records = list(read_manifest(sd_manifests / "sd_saliency_900.jsonl"))
    write_manifest(sd_manifests / "sd_saliency_900.jsonl", [r for r in records if r.native_label != "Pa"])
    build(_registry(sd_manifests), out, progress=False)
    assert datasets.load_dataset(str(out), split="train").num_rows == 596
    assert not (out / "data" / "sd_saliency_900" / "stain.parquet").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_killed_midway_leaves_previous_output(sd_manifests, tmp_path):
    out = tmp_path / "daad"
    build(_registry(sd_manifests), out, progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # A slower build: 20x the records (same files, new ids), killed with SIGKILL mid-way.
    records = list(read_manifest(sd_manifests / "sd_saliency_900.jsonl"))
    from dataclasses import replace

    big = [replace(r, id=f"{r.id}-{k:02d}") for k in range(20) for r in records]
    write_manifest(sd_manifests / "sd_saliency_900.jsonl", big)
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[4]);"
        "from daad.dataset.build import build; from daad.registry import Registry; from daad.registry.roots import Roots;"
        "build(Registry(Path(sys.argv[1]), Roots({'sd_saliency_900': Path(sys.argv[2])})), Path(sys.argv[3]), progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(sd_manifests), str(SD_ROOT), str(out), str(REPO)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tmp = [p for p in tmp_path.glob(".daad.tmp-*") if any(p.rglob("*.parquet"))]
        if tmp:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("build never started writing")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert datasets.load_dataset(str(out), split="train").num_rows == 895
    # The next build cleans the dead build's temp folder and succeeds.
    write_manifest(sd_manifests / "sd_saliency_900.jsonl", records)
    build(_registry(sd_manifests), out, progress=False)
    assert not list(tmp_path.glob(".daad.tmp-*"))


def test_cli_build_and_load_from_parent_dir(sd_manifests, tmp_path):
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "daad", "build", "--manifests", str(sd_manifests),
         "--root", f"sd_saliency_900={SD_ROOT}", "--out", "daad", "-q", "--no-download"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "built 895 rows" in result.stdout
    # load_dataset("daad") from the directory that holds the built folder.
    code = "import datasets; ds = datasets.load_dataset('daad', split='train'); print(ds.num_rows)"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().splitlines()[-1] == "895"


def test_build_refuses_package_folder(sd_manifests):
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "daad", "build", "--manifests", str(sd_manifests), "--out", str(REPO / "daad" / "out")],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "refusing to write into the daad package" in result.stderr + result.stdout
    assert not (REPO / "daad" / "out").exists()


def test_a_bad_manifest_line_in_a_worker_names_file_and_line(sd_manifests, tmp_path):
    manifests = sd_manifests
    path = manifests / "sd_saliency_900.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[700] = lines[700].replace('"anomaly_class": "scratch"', '"anomaly_class": "dent"')
    path.write_text("".join(lines))
    out = tmp_path / "daad"
    with pytest.raises(ManifestError, match=rf"sd_saliency_900.jsonl:701: .*dent"):
        build(_registry(manifests), out, progress=False, workers=2)
    assert not out.exists() and not list(tmp_path.glob(".daad.tmp-*"))


def _tree(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_unchanged_origins_keep_their_shards_and_the_output_equals_a_full_build(tmp_path):
    manifests = copy_manifests(tmp_path / "manifests", "sd_saliency_900", "crackforest")

    def run(out: Path, reuse: bool = True) -> BuildSummary:
        return build(Registry(manifests, Roots(SOURCE_ROOTS)), out, progress=False, reuse=reuse)

    def fresh() -> dict[Path, bytes]:
        target = tmp_path / "fresh" / "daad"
        run(target, reuse=False)
        return _tree(target)

    out = tmp_path / "daad"
    first = run(out)
    assert first.reused == [] and first.accepted == 895 + 118
    inodes = {p: p.stat().st_ino for p in (out / "data").rglob("*.parquet")}
    second = run(out)
    assert second.reused == ["crackforest", "sd_saliency_900"] and second.accepted == first.accepted
    assert {p: p.stat().st_ino for p in (out / "data").rglob("*.parquet")} == inodes  # linked, not rewritten
    assert _tree(out) == fresh()

    # One origin changes: only it is rebuilt, and the result is what a full build gives.
    records = list(read_manifest(manifests / "crackforest.jsonl"))
    write_manifest(manifests / "crackforest.jsonl", [replace(records[0], status=Status.REJECTED)] + records[1:])
    third = run(out)
    assert third.reused == ["sd_saliency_900"] and third.accepted == first.accepted - 1
    assert _tree(out) == fresh()

    # A damaged shard is never reused.
    victim = out / "data" / "sd_saliency_900" / "scratch.parquet"
    victim.write_bytes(victim.read_bytes()[:-16] + bytes(16))
    assert run(out).reused == ["crackforest"]
    assert _tree(out) == fresh()

    # New exclusion rules (they decide the near-copy shards) rebuild every origin.
    with open(manifests / "exclusions.toml", "a", encoding="utf-8") as f:
        f.write("\n# reviewed\n")
    assert run(out).reused == []
    assert run(out, reuse=False).reused == []


def test_weak_masks_are_built_unless_left_out(sd_manifests, tmp_path):
    path = sd_manifests / "sd_saliency_900.jsonl"
    records = list(read_manifest(path))[:20]
    write_manifest(path, [replace(r, weak_mask=True) if i < 5 else r for i, r in enumerate(records)])
    assert path.read_text().count('"weak_mask": true') == 5
    registry = _registry(sd_manifests)
    assert build(registry, tmp_path / "all", progress=False, workers=1).accepted == 20
    summary = build(registry, tmp_path / "strong", progress=False, workers=1, weak_masks=False)
    assert summary.accepted == 15 and summary.skipped == {"weak_mask": 5}
