"""One way of reading images everywhere: EXIF orientation applied, pixels as RGB, masks
binarised at half the range; a user's folder with bad rows is ingested, the bad rows named.

Each collection is written in the test: images with EXIF orientation tags, CMYK, palette,
RGBA and 16-bit images, masks saved as JPEG, gradients, inverted, all-ones and alpha-only
masks, a decompression-bomb mask and rows whose paths leave the folder."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from conftest import copy_manifests
from daad.annotations.bitmap import read_bitmap
from daad.dataset.build import build
from daad.evaluation.data import as_rgb
from daad.evaluation.data import read_image as evaluation_read_image
from daad.sources.ingest import ingest
from daad.loaders import get_loader
from daad.registry.manifest import read_manifest
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.targets import load_targets
from daad.taxonomy import Status
from daad.registry.validate import validate

W, H = 48, 72  # as displayed: portrait
BOX = (slice(10, 30), slice(8, 20))  # rows, columns of the bright square, as displayed


def _displayed() -> tuple[np.ndarray, np.ndarray]:
    """The picture as a viewer shows it (dark, one bright square) and its mask."""
    image = np.full((H, W, 3), 40, np.uint8)
    image[BOX] = 230
    mask = np.zeros((H, W), np.uint8)
    mask[BOX] = 255
    return image, mask


def _save_oriented(path: Path, displayed: np.ndarray, orientation: int) -> None:
    """Store ``displayed`` as a JPEG whose raw pixels need EXIF ``orientation`` to look like it."""
    raw = Image.fromarray(displayed)
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    raw = raw.transpose(undo)
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw.save(path, "JPEG", quality=95, exif=exif)
    with Image.open(path) as check:  # what every viewer shows is the displayed picture
        assert ImageOps.exif_transpose(check).size == (W, H)


def _write_collection(root: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "class", "licence", "mask"])
        for image, cls, mask in rows:
            writer.writerow([image, cls, "CC-BY-4.0", mask])


def _ingest(tmp_path: Path, root: Path):
    manifests = copy_manifests(tmp_path / "manifests")
    report = ingest(get_loader("folder").iter_records(root), manifests / "folder.jsonl")
    return Registry(manifests, Roots({"folder": root})), report


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_everywhere(tmp_path, orientation):
    root = tmp_path / "photos"
    (root / "masks").mkdir(parents=True)
    displayed, mask = _displayed()
    _save_oriented(root / "phone.jpg", displayed, orientation)
    Image.fromarray(mask).save(root / "masks" / "phone.png")  # drawn on the picture as shown
    _write_collection(root, [("phone.jpg", "crack", "")])
    registry, report = _ingest(tmp_path, root)
    assert report.accepted == 1, report.skipped_items
    (record,) = registry.records()
    assert (record.width, record.height) == (W, H) and record.status is Status.ACCEPTED
    assert validate(registry, progress=False).accepted == 1

    def aligned(rgb: np.ndarray) -> None:
        assert rgb.shape == (H, W, 3)
        inside, outside = rgb[mask > 0].mean(), rgb[mask == 0].mean()
        assert inside > 200 and outside < 70, (inside, outside)  # rotated under its mask, these swap

    aligned(registry.view(evaluation="none").read_image(record))  # what every generator reads
    aligned(evaluation_read_image(root / "phone.jpg", "phone"))  # the evaluation's reader
    (target,) = load_targets([("phone", root / "phone.jpg")], size=None)  # generator targets
    aligned(target.image)

    out = tmp_path / "build" / "daad"
    assert build(registry, out, progress=False, workers=1).accepted == 1
    row = datasets.load_dataset(str(out), split="train")[0]
    assert row["image"].size == row["mask"].size == (W, H)
    aligned(np.asarray(row["image"]))
    assert np.array_equal(np.asarray(row["mask"]) > 0, mask > 0)


def test_fiftyone_samples_carry_the_displayed_size(tmp_path):
    fo = pytest.importorskip("fiftyone")
    from daad.curate.dataset import _record_sample
    from daad.registry.manifest import dumps

    root = tmp_path / "photos"
    (root / "masks").mkdir(parents=True)
    displayed, mask = _displayed()
    _save_oriented(root / "phone.jpg", displayed, 6)
    Image.fromarray(mask).save(root / "masks" / "phone.png")
    _write_collection(root, [("phone.jpg", "crack", "")])
    registry, _ = _ingest(tmp_path, root)
    (record,) = registry.records()
    sample = _record_sample(fo, registry, record, dumps(record), tmp_path / "fo-masks")
    # The App draws the file as browsers do (EXIF applied) under a mask of the same size.
    assert (sample.metadata.width, sample.metadata.height) == (W, H)
    with Image.open(sample["ground_truth"].mask_path) as drawn:
        assert drawn.size == (W, H)


def test_every_reader_sees_cmyk_palette_rgba_and_grey_as_the_dataset_does(tmp_path):
    root = tmp_path / "modes"
    (root / "masks").mkdir(parents=True)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    images = {
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "palette.png": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE),
        "rgba.png": Image.fromarray(np.dstack([rgb, rng.integers(0, 255, (40, 56), dtype=np.uint8)]), "RGBA"),
        "grey.png": Image.fromarray(rgb[..., 0], "L"),
        "deep.png": Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)),
    }
    mask = np.zeros((40, 56), np.uint8)
    mask[5:15, 5:25] = 255
    for name, image in images.items():
        image.save(root / name)
        Image.fromarray(mask).save(root / "masks" / f"{Path(name).stem}.png")
    _write_collection(root, [(name, "stain", "") for name in images])
    registry, report = _ingest(tmp_path, root)
    # 16-bit: PIL (and so datasets) would clip it to 255; refused by name, not stored wrong.
    assert [(i["id"], i["reason"]) for i in report.skipped_items] == [("folder/deep", "unsupported_mode")]
    assert str(root / "deep.png") in report.skipped_items[0]["file"]

    out = tmp_path / "build" / "daad"
    assert build(registry, out, progress=False, workers=1).accepted == 4
    rows = {row["id"]: row for row in datasets.load_dataset(str(out), split="train")}
    view = registry.view(evaluation="none")
    for record in view:
        name = record.image.path
        column = rows[record.id]["image"]
        assert column.mode == "RGB", name
        expected = np.asarray(column)
        assert np.array_equal(view.read_image(record), expected), name
        assert np.array_equal(as_rgb(evaluation_read_image(root / name, name)), expected), name  # grey kept 1 channel
        (target,) = load_targets([(name, root / name)], size=None)
        assert np.array_equal(target.image, expected), name


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> None:
    Image.fromarray(array, mode).save(path, **kwargs)


def test_masks_are_binarised_at_half_range_and_doubtful_ones_are_sent_for_review(tmp_path):
    root = tmp_path / "masks-zoo"
    (root / "masks").mkdir(parents=True)
    image = np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    square = np.zeros((64, 64), np.uint8)
    square[16:40, 20:44] = 255
    gradient = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    alpha_only = np.zeros((64, 64, 4), np.uint8)
    alpha_only[..., 3] = square
    masks = {
        "clean": lambda p: _save(p, square),
        "jpeg": lambda p: _save(p.with_suffix(".jpg"), square, quality=60),
        "gradient": lambda p: _save(p, gradient),
        "inverted": lambda p: _save(p, 255 - square),
        "ones": lambda p: _save(p, np.full((64, 64), 255, np.uint8)),
        "alpha": lambda p: _save(p, alpha_only, "RGBA"),
        "bomb": lambda p: Image.new("1", (20_000, 20_000)).save(p),
    }
    rows = []
    for name, write in masks.items():
        Image.fromarray(image).save(root / f"{name}.png")
        write(root / "masks" / f"{name}.png")
        mask_file = f"masks/{name}.jpg" if name == "jpeg" else f"masks/{name}.png"
        rows.append((f"{name}.png", "stain", mask_file))
    rows.append(("../outside.png", "stain", ""))  # leaves the folder: skipped, the rest goes on
    rows.append(("clean.png", "stain", "../../etc/passwd"))  # so does its mask
    (tmp_path / "outside.png").write_bytes((root / "clean.png").read_bytes())
    # the duplicate "clean.png" row would be a second record with the same id: give it its own image
    os.link(root / "clean.png", root / "clean2.png")
    rows[-1] = ("clean2.png", "stain", "../../etc/passwd")
    _write_collection(root, rows)

    registry, report = _ingest(tmp_path, root)
    records = {r.native_id: r for r in registry.records()}
    area = int((square > 0).sum())
    assert records["clean"].status is Status.ACCEPTED and records["clean"].area == area
    # a JPEG-saved mask keeps its area (it was 2.2x with "non-zero is anomaly") but is sent for review
    assert abs(records["jpeg"].area - area) < 0.05 * area
    assert records["jpeg"].status is Status.NEEDS_REVIEW and records["jpeg"].reason.startswith("mask_not_binary")
    assert records["gradient"].status is Status.NEEDS_REVIEW and records["gradient"].area == 64 * 32
    assert records["inverted"].status is Status.NEEDS_REVIEW and "mask_covers_most" in records["inverted"].reason
    assert records["ones"].status is Status.NEEDS_REVIEW and "100%" in records["ones"].reason
    assert records["alpha"].status is Status.ACCEPTED and records["alpha"].area == area  # was called empty

    skipped = {i["id"]: i for i in report.skipped_items}
    assert skipped["folder/bomb"]["reason"] == "decompression_bomb"
    assert skipped["folder/bomb"]["file"] == str(root / "masks" / "bomb.png")
    assert skipped["folder/../outside"]["reason"] == "path_escape" and skipped["folder/../outside"]["file"] == "../outside.png"
    assert skipped["folder/clean2"]["reason"] == "path_escape" and "etc/passwd" in skipped["folder/clean2"]["file"]
    assert report.skipped == {"decompression_bomb": 1, "path_escape": 2}
    assert len(records) == 6

    assert read_bitmap(root / "masks" / "clean.png").review() is None
    assert validate(registry, progress=False).accepted == 6  # every file is sound
    summary = build(registry, tmp_path / "build" / "daad", progress=False, workers=1)
    assert summary.accepted == 2 and summary.skipped == {"status:needs_review": 4}  # reviewed before they ship


def test_ingest_names_skipped_items_in_the_table_and_json(tmp_path):
    from daad.cli.app import app

    root = tmp_path / "photos"
    (root / "masks").mkdir(parents=True)
    Image.new("1", (20_000, 20_000)).save(root / "masks" / "big.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "big.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "good.png")  # one good row: a folder of only bad ones is refused
    good_mask = np.zeros((32, 32), np.uint8)
    good_mask[8:16, 8:16] = 255
    Image.fromarray(good_mask).save(root / "masks" / "good.png")
    _write_collection(root, [("big.png", "crack", ""), ("../escape.png", "crack", ""), ("good.png", "crack", "")])
    manifests = copy_manifests(tmp_path / "manifests")
    runner = CliRunner()
    args = ["ingest", "folder", "--root", f"folder={root}", "--manifests", str(manifests)]
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    items = json.loads(as_json.output)["skipped_items"]
    assert [(i["id"], i["reason"]) for i in items] == [("folder/big", "decompression_bomb"), ("folder/../escape", "path_escape")]
    assert items[0]["file"] == str(root / "masks" / "big.png") and items[1]["file"] == "../escape.png"
    table = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert table.exit_code == 0, table.output
    assert "decompression_bomb" in table.output and "path_escape" in table.output and "big.png" in table.output
