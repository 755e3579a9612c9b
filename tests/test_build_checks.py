"""``daad build`` refuses by name what ``daad validate`` refuses, even when the sha256 matches;
manifest fields of the wrong type, unknown licences, FIFOs and concurrent builds are named."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import REPO, writable_sd_subset
from daad.dataset.build import BuildError, build
from daad.errors import ManifestError
from daad.images import sha256_file
from daad.registry.manifest import read_manifest, write_manifest
from daad.masks import RLE
from daad.record import Record
from daad.registry import Registry
from daad.dataset.shards import OutputLockedError
from daad.registry.validate import validate

N = 6


@pytest.fixture
def small(tmp_path, sd_manifests) -> tuple[Registry, Path, list[Record], Path]:
    """Six real SD-saliency-900 images, their manifest, and a first build in ``out``."""
    registry, root, records = writable_sd_subset(tmp_path, sd_manifests, N)
    out = tmp_path / "daad"
    build(registry, out, progress=False, workers=1)
    return registry, root, records, out


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expired(*_):
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _replace(registry: Registry, records: list[Record], new: Record) -> None:
    write_manifest(registry.manifests_dir / "sd_saliency_900.jsonl", [new if r.id == new.id else r for r in records])


def _with_image(root: Path, record: Record, name: str, data: bytes) -> Record:
    """``record`` pointing at a new file ``name`` holding ``data``, its sha256 re-pinned."""
    path = root / "Source Images" / name
    path.write_bytes(data)
    return replace(record, image=replace(record.image, path=f"Source Images/{name}", sha256=sha256_file(path)))


def _huge_rle(side: int) -> RLE:
    """A ``side x side`` mask with a few anomaly pixels, made from its runs (no pixel array)."""
    runs, left = [], side * side
    while left > 1 << 31:  # a run length is 32 bits: one anomaly pixel every 2**31
        runs += [(1 << 31) - 1, 1]
        left -= 1 << 31
    coco = mask_utils.frPyObjects({"size": [side, side], "counts": [*runs, left]}, side, side)
    return RLE.from_json({"size": [side, side], "counts": coco["counts"].decode("ascii")})


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _grey(size=(200, 200)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, size[::-1], dtype=np.uint8), "L")


CASES = {
    "mask-wrong-size": (lambda root, r: r.with_mask(RLE.encode(np.ones((100, 120), np.uint8))), "mask_size_mismatch"),
    "empty-mask": (lambda root, r: replace(r, mask=RLE.encode(np.zeros((200, 200), np.uint8)), bbox=None, area=None), "empty_mask"),
    "truncated-bmp": (lambda root, r: _with_image(root, r, "t.bmp", (root / r.image.path).read_bytes()[:20000]), "corrupt_image"),
    "truncated-png": (lambda root, r: _with_image(root, r, "t.png", _encoded(_grey(), "PNG")[:30000]), "corrupt_image"),
    "truncated-jpeg": (lambda root, r: _with_image(root, r, "t.jpg", _encoded(_grey(), "JPEG")[:5000]), "corrupt_image"),
    "garbage": (lambda root, r: _with_image(root, r, "g.bmp", os.urandom(5000)), "corrupt_image"),
    "png-bomb": (lambda root, r: _with_image(root, r, "bomb.png", _encoded(Image.new("1", (20_000, 20_000)), "PNG")), "decompression_bomb"),
    "16-bit": (lambda root, r: _with_image(root, r, "deep.png", _encoded(Image.fromarray(np.full((200, 200), 4000, np.uint16)), "PNG")), "unsupported_mode"),
    "rle-60000": (lambda root, r: r.with_mask(_huge_rle(60_000)), "decompression_bomb"),
    "rle-300000": (lambda root, r: r.with_mask(_huge_rle(300_000)), "decompression_bomb"),
    "unknown-licence": (lambda root, r: replace(r, licence="LicenseRef-Nobody-Said"), "unknown_licence"),
}


@pytest.mark.parametrize("case", CASES)
def test_build_rejects_what_validate_rejects_by_name(small, case):
    registry, root, records, out = small
    damage, reason = CASES[case]
    victim = damage(root, records[2])
    _replace(registry, records, victim)

    report = validate(registry, progress=False)
    assert report.rejected == {reason: 1} and report.accepted == N - 1
    assert victim.id in report.errors[0]["message"]

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(BuildError) as info:
        build(registry, out, progress=False, workers=1)
    summary = info.value.summary
    assert summary.rejected == {reason: 1} and summary.accepted == N - 1
    assert victim.id in summary.errors[0] and victim.id in str(info.value)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_fifo_is_refused_not_waited_on(small):
    registry, root, records, out = small
    fifo = root / "Source Images" / "pipe.bmp"
    os.mkfifo(fifo)
    victim = replace(records[1], image=replace(records[1].image, path="Source Images/pipe.bmp"))
    _replace(registry, records, victim)
    with deadline(30):
        report = validate(registry, progress=False)
        assert report.rejected == {"not_a_file": 1} and "FIFO" in report.errors[0]["message"]
        with pytest.raises(BuildError) as info:
            build(registry, out, progress=False, workers=1)
    assert info.value.summary.rejected == {"not_a_file": 1} and victim.id in info.value.summary.errors[0]


def test_a_fifo_among_the_manifests_is_not_read(small):
    registry, root, records, out = small
    os.mkfifo(registry.manifests_dir / "zz_pipe.jsonl")
    with deadline(30):
        assert validate(registry, progress=False).accepted == N
        assert build(registry, out, progress=False, workers=1).accepted == N


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda o: o | {"bbox": 5}, "bbox must be a list, got 5"),
        (lambda o: o | {"bbox": [1, 2, "3", 4]}, "bbox must be a list of four integers"),
        (lambda o: o | {"curated": 5}, "curated must be a list"),
        (lambda o: o | {"image": o["image"] | {"path": 5}}, "image.path must be a string"),
        (lambda o: o | {"width": "200"}, "width must be an integer, got '200'"),
        (lambda o: o | {"area": True}, "area must be an integer"),
        (lambda o: o | {"note": ["x"]}, "note must be a string"),
    ],
    ids=["bbox-int", "bbox-str", "curated-int", "path-int", "width-str", "area-bool", "note-list"],
)
def test_manifest_fields_of_the_wrong_type_name_file_and_line(small, edit, message):
    registry, root, records, out = small
    path = registry.manifests_dir / "sd_saliency_900.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = json.dumps(edit(json.loads(lines[3])))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as info:
        list(read_manifest(path))
    assert info.value.line == 4 and message in info.value.reason and str(info.value).startswith(f"{path}:4: ")
    with pytest.raises(ManifestError, match=f"{path}:4: .*{message[:12]}"):
        build(registry, out, progress=False, workers=1)


def test_invalid_utf8_names_file_and_line(small):
    registry, root, records, out = small
    path = registry.manifests_dir / "sd_saliency_900.jsonl"
    lines = path.read_bytes().splitlines()
    lines[2] = lines[2].replace(b'"note": null', b'"note": "caf\xe9"')
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ManifestError) as info:
        list(read_manifest(path))
    assert info.value.line == 3 and "invalid UTF-8" in info.value.reason
    with pytest.raises(ManifestError, match=f"{path}:3: invalid UTF-8"):
        validate(registry, progress=False)


def test_a_second_build_to_the_same_output_is_refused_naming_the_holder(small, tmp_path):
    registry, root, records, out = small
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from daad.dataset.features import REGISTRY_FEATURES
            from daad.dataset.shards import DatasetFolderWriter
            with DatasetFolderWriter({str(out)!r}, REGISTRY_FEATURES) as writer:
                print("locked", flush=True)
                time.sleep(60)
        """)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        with pytest.raises(OutputLockedError) as info:
            build(registry, out, progress=False, workers=1)
        assert f"pid {holder.pid}" in str(info.value) and str(out) in str(info.value)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    assert build(registry, out, progress=False, workers=1).accepted == N  # the lock went with its holder
