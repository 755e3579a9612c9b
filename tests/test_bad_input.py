"""Every kind of bad input gets its named error, and nothing already built is lost."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SD_ROOT, writable_sd_subset
from daad.dataset.build import BuildError, build
from daad.registry import roots as roots_module
from daad.errors import ManifestError, PathEscapeError, RecordFileError
from daad.images import sha256_file
from daad.registry.manifest import dumps, read_manifest, write_manifest
from daad.masks import RLE
from daad.registry import Registry
from daad.registry.roots import Roots, read_in_root, resolve_in_root
from daad.registry.validate import validate

N = 12


@pytest.fixture
def small(tmp_path, sd_manifests) -> tuple[Registry, Path, list]:
    """A writable copy of 12 real SD-saliency-900 images with their manifest records."""
    return writable_sd_subset(tmp_path, sd_manifests, N)


def _rejects(registry: Registry) -> dict[str, list[str]]:
    report = validate(registry, progress=False)
    found: dict[str, list[str]] = {}
    for e in report.errors:
        found.setdefault(e["reason"], []).append(e["message"])
    assert report.accepted + sum(report.rejected.values()) == N
    return found


def _assert_build_keeps_previous(registry: Registry, out: Path, reason: str) -> None:
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(BuildError) as info:
        build(registry, out, progress=False)
    assert info.value.summary.rejected[reason] == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.fixture
def built(small, tmp_path):
    registry, root, records = small
    out = tmp_path / "daad"
    build(registry, out, progress=False)
    return registry, root, records, out


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "sha256_mismatch"),
        (lambda p: p.write_bytes(b""), "empty_file"),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["truncated", "zero-byte", "missing"],
)
def test_damaged_file_is_rejected_by_name(built, damage, reason):
    registry, root, records, out = built
    victim = root / records[3].image.path
    damage(victim)
    found = _rejects(registry)
    assert list(found) == [reason]
    assert records[3].id in found[reason][0] and str(victim) in found[reason][0]
    _assert_build_keeps_previous(registry, out, reason)


def test_corrupt_image_with_matching_hash_is_rejected(built, sd_manifests):
    registry, root, records, out = built
    victim = root / records[2].image.path
    data = bytearray(victim.read_bytes())
    data[:2] = b"XX"  # not a BMP any more; the manifest is re-pinned so only decoding can catch it
    victim.write_bytes(bytes(data))
    rewritten = [replace(r, image=replace(r.image, sha256=sha256_file(victim))) if r.id == records[2].id else r for r in records]
    write_manifest(sd_manifests / "sd_saliency_900.jsonl", rewritten)
    found = _rejects(registry)
    assert list(found) == ["corrupt_image"] and records[2].id in found["corrupt_image"][0]


def test_decompression_bomb_is_refused(small, sd_manifests):
    registry, root, records = small
    bomb = root / "Source Images" / "In_bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # 400 Mpx in a few kB
    target = records[0]
    rewritten = [replace(target, image=replace(target.image, path="Source Images/In_bomb.png", sha256=sha256_file(bomb)))] + records[1:]
    write_manifest(sd_manifests / "sd_saliency_900.jsonl", rewritten)
    found = _rejects(registry)
    assert list(found) == ["decompression_bomb"] and str(bomb) in found["decompression_bomb"][0]


def test_mask_size_mismatch_and_empty_mask(small, sd_manifests):
    registry, root, records = small
    wrong = records[1].with_mask(RLE.encode(np.ones((100, 120), np.uint8)))
    empty = replace(records[4], mask=RLE.encode(np.zeros((200, 200), np.uint8)), bbox=None, area=None)
    write_manifest(sd_manifests / "sd_saliency_900.jsonl", [wrong if r.id == wrong.id else empty if r.id == empty.id else r for r in records])
    found = _rejects(registry)
    assert set(found) == {"mask_size_mismatch", "empty_mask"}
    assert wrong.id in found["mask_size_mismatch"][0] and "120x100" in found["mask_size_mismatch"][0]
    assert empty.id in found["empty_mask"][0]


def test_path_escaping_root_is_refused(small, sd_manifests, tmp_path):
    registry, root, records = small
    outside = tmp_path / "secret.bmp"
    shutil.copy(SD_ROOT / records[0].image.path, outside)
    (root / "link.bmp").symlink_to(outside)
    for bad in ("../secret.bmp", str(outside), "link.bmp"):
        with pytest.raises(PathEscapeError) as info:
            resolve_in_root(root, bad, records[0].id)
        assert records[0].id in str(info.value) and bad in str(info.value)
    escaping = replace(records[0], image=replace(records[0].image, path="../secret.bmp"))
    write_manifest(sd_manifests / "sd_saliency_900.jsonl", [escaping, *records[1:]])
    assert list(_rejects(registry)) == ["path_escape"]


@pytest.mark.parametrize("kernel_check", ["openat2", "resolve"])
def test_reading_under_a_root_follows_only_symlinks_that_stay_inside(small, tmp_path, monkeypatch, kernel_check):
    registry, root, records = small
    if kernel_check == "resolve":  # as where the kernel (or a sandbox) has no openat2
        monkeypatch.setattr(roots_module, "_openat2", lambda: None)
    first = records[0].image.path
    (tmp_path / "outside").mkdir()
    shutil.copy(root / first, tmp_path / "outside" / "x.bmp")
    (root / "inside.bmp").symlink_to(root / first)  # absolute, pointing inside
    (root / "relative.bmp").symlink_to(first)
    (root / "out.bmp").symlink_to(tmp_path / "outside" / "x.bmp")
    (root / "out_relative.bmp").symlink_to(Path("..") / "outside" / "x.bmp")
    (root / "outdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    for good in ("inside.bmp", "relative.bmp", first):
        assert read_in_root(root, good, "r/1") == (root / first).read_bytes()
    for bad in ("out.bmp", "out_relative.bmp", "outdir/x.bmp", "../outside/x.bmp", str(tmp_path / "outside" / "x.bmp")):
        with pytest.raises(PathEscapeError, match="r/1"):
            read_in_root(root, bad, "r/1")
    with pytest.raises(RecordFileError) as info:
        read_in_root(root, "Source Images/nope.bmp", "r/1")
    assert info.value.reason == "missing" and str(root / "Source Images/nope.bmp") in str(info.value)
    with pytest.raises(RecordFileError, match="missing"):
        read_in_root(root, "Source Images", "r/1")
    escaping = replace(records[0], image=replace(records[0].image, path="outdir/x.bmp", sha256=sha256_file(root / first)))
    write_manifest(registry.manifests_dir / "sd_saliency_900.jsonl", [escaping, *records[1:]])
    assert list(_rejects(registry)) == ["path_escape"]


def _manifest_lines(sd_manifests: Path) -> list[str]:
    return (sd_manifests / "sd_saliency_900.jsonl").read_text().splitlines()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:3] + ["{not json"] + lines[4:], "malformed JSON"),
        (lambda lines: lines[:4] + [lines[3]] + lines[4:], "duplicate id"),
        (lambda lines: lines[:3] + [lines[3].replace('"impurity"', '"dent"', 1)] + lines[4:], "unknown anomaly class 'dent'"),
        (lambda lines: lines[:3] + [_bad_rle(lines[3])] + lines[4:], "mask RLE"),
        (lambda lines: lines[:3] + [lines[3].replace('"licence": "', '"licence": "not a licence', 1)] + lines[4:], "licence"),
        (lambda lines: [lines[1], lines[0]] + lines[2:], "out of order"),
    ],
    ids=["malformed", "duplicate", "unknown-class", "bad-rle", "bad-licence", "unsorted"],
)
def test_manifest_errors_name_file_and_line(small, sd_manifests, edit, message):
    path = sd_manifests / "sd_saliency_900.jsonl"
    lines = edit(_manifest_lines(sd_manifests))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as info:
        list(read_manifest(path))
    err = info.value
    assert err.path == path and message in err.reason
    assert err.line in (2, 4, 5)
    assert f"{path}:{err.line}:" in str(err)


def _bad_rle(line: str) -> str:
    obj = json.loads(line)
    obj["mask"]["counts"] = obj["mask"]["counts"][: len(obj["mask"]["counts"]) // 2]
    return json.dumps(obj)


def test_manifest_lines_are_stable(sd_manifests):
    path = sd_manifests / "sd_saliency_900.jsonl"
    text = path.read_text()
    records = list(read_manifest(path))
    write_manifest(path, reversed(records))
    assert path.read_text() == text
    assert text.splitlines()[0] == dumps(records[0])
    assert list(json.loads(text.splitlines()[0]))[:3] == ["id", "anomaly_class", "source"]
