"""Registry-wide duplicates: `daad dedup` marks near copies (any dihedral transform, JPEG,
crops) of another record with duplicate_of; builds and views leave them out, the card counts them.

Real data: SD-saliency-900 and KolektorSDD from the shared data folder. A fake NEU-Seg tree
(its exact layout) holds rotated/mirrored JPEG copies of SD-saliency-900 images, a new image
and its own rotated copy; a fake KolektorSDD original release holds the YOLO release's images.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image, ImageOps
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from benchmarks.leakage import crop, jpeg
from conftest import SD_ROOT, SHARED_DATA, copy_manifests
from daad.dataset.build import build
from daad.registry.catalogue import Catalogue
from daad.cli import app
from daad.registry.dedup import DedupError, origin_priority
from daad.sources.ingest import ingest
from daad.loaders import get_loader
from daad.loaders import kolektorsdd as kolektorsdd_loader
from daad.loaders import neu_seg as neu_seg_loader
from daad.registry.manifest import dumps, read_manifest, write_manifest
from daad.registry.neardup import (
    DETAIL_THRESHOLD, FINE_THRESHOLD, THRESHOLD, detail_correlation, detail_thumbnails, dihedral, fine_distance,
    fine_signature, image_hash, query_detail, query_signature, variant_hashes,
)
from daad.record import Record
from daad.registry import Registry
from daad.registry.roots import Roots

KSDD_ROOT = SHARED_DATA / "kolektorsdd-yolo"
SD_IDS = [f"sd_saliency_900/{n}" for n in ("In_1", "In_2", "Pa_1", "Pa_2", "Sc_1", "Sc_2", "Sc_3")]
COPIES = {  # NEU-Seg number -> (SD-saliency-900 image, dihedral transform) it copies
    "000201": ("In_1", 5),  # 90° rotation
    "000202": ("Pa_2", 1),  # mirror
    "000203": ("Sc_3", 6),  # 270° rotation
}


def _runner(manifests: Path, roots: dict[str, Path], *args: str):
    options = [x for origin, path in roots.items() for x in ("--root", f"{origin}={path}")]
    return CliRunner().invoke(app, ["dedup", "--manifests", str(manifests), *options, "-q", *args])


def _save_neu_seg(root: Path, number: str, image: Image.Image, mask: np.ndarray) -> Path:
    """images/training/NNNNNN.jpg + annotations/training/NNNNNN.png (values 1/2/3); the image's path."""
    (root / "images" / "training").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "training").mkdir(parents=True, exist_ok=True)
    jpeg(image, 85).save(root / "images" / "training" / f"{number}.jpg", quality=95)
    Image.fromarray(mask, "L").save(root / "annotations" / "training" / f"{number}.png")
    return root / "images" / "training" / f"{number}.jpg"


def _write_neu_seg(root: Path) -> None:
    def save(number: str, image: Image.Image, mask: np.ndarray) -> None:
        _save_neu_seg(root, number, image, mask)

    for number, (stem, k) in COPIES.items():
        with Image.open(SD_ROOT / "Source Images" / f"{stem}.bmp") as image, \
                Image.open(SD_ROOT / "Ground truth" / f"{stem}.png") as gt:
            value = {"In": 1, "Pa": 2, "Sc": 3}[stem[:2]]
            mask = (np.asarray(dihedral(gt.convert("L"), k)) > 127).astype(np.uint8) * value
            save(number, dihedral(image.convert("RGB"), k), mask)
    # a new image (a KolektorSDD crop, nothing like SD-saliency-900) and its own 180° rotation
    with Image.open(sorted((KSDD_ROOT / "Datasets" / "images" / "train").glob("*.jpg"))[40]) as image:
        new = image.convert("RGB").crop((0, 300, 200, 500))
    mask = np.zeros((200, 200), np.uint8)
    mask[50:90, 60:120] = 3
    save("000204", new, mask)
    save("000205", dihedral(new, 3), mask[::-1, ::-1].copy())


@pytest.fixture
def registry_with_copies(tmp_path) -> dict:
    manifests = copy_manifests(tmp_path / "manifests")
    sd = [replace(r, duplicate_of=None) for r in read_manifest(Path("manifests/sd_saliency_900.jsonl")) if r.id in SD_IDS]
    write_manifest(manifests / "sd_saliency_900.jsonl", sd)
    neu_root = tmp_path / "neu_seg"
    _write_neu_seg(neu_root)
    entry = Catalogue.load(manifests)["neu_seg"]
    write_manifest(manifests / "neu_seg.jsonl", [r for r in neu_seg_loader.iter_records(neu_root, entry) if isinstance(r, Record)])
    roots = {"sd_saliency_900": SD_ROOT, "neu_seg": neu_root}
    return {"manifests": manifests, "roots": roots}


def _bytes(manifests: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(manifests.glob("*.jsonl"))}


def test_dedup_marks_rotated_and_mirrored_copies_and_a_copy_within_the_origin(registry_with_copies, tmp_path):
    manifests, roots = registry_with_copies["manifests"], registry_with_copies["roots"]
    before = _bytes(manifests)
    result = _runner(manifests, roots, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would change: 4 mark(s) set" in " ".join(result.output.split())
    assert _bytes(manifests) == before  # a dry run writes nothing

    result = _runner(manifests, roots)
    assert result.exit_code == 0, result.output
    marks = {r.id: r.duplicate_of for r in read_manifest(manifests / "neu_seg.jsonl")}
    assert marks == {
        "neu_seg/training/000201/inclusion": "sd_saliency_900/In_1",
        "neu_seg/training/000202/patches": "sd_saliency_900/Pa_2",
        "neu_seg/training/000203/scratches": "sd_saliency_900/Sc_3",
        "neu_seg/training/000204/scratches": None,
        "neu_seg/training/000205/scratches": "neu_seg/training/000204/scratches",
    }
    # the original publisher's manifest is untouched, and unmarked lines stay byte-identical
    assert (manifests / "sd_saliency_900.jsonl").read_bytes() == before["sd_saliency_900.jsonl"]
    line = (manifests / "neu_seg.jsonl").read_text().splitlines()[3]
    assert '"duplicate_of"' not in line and line == dumps(Record.from_json(json.loads(line)))

    after = _bytes(manifests)
    entry = Catalogue.load(manifests)["neu_seg"]  # re-ingesting keeps the marks (same images)
    report = ingest(neu_seg_loader.iter_records(roots["neu_seg"], entry), manifests / "neu_seg.jsonl")
    assert not report.written and _bytes(manifests) == after
    result = _runner(manifests, roots)  # idempotent
    assert "0 mark(s) set, 0 cleared" in " ".join(result.output.split())
    assert _bytes(manifests) == after
    # without NEU-Seg's files its marks are kept, and said to be unchecked
    result = _runner(manifests, {"sd_saliency_900": SD_ROOT})
    assert result.exit_code == 0, result.output
    assert "unchecked neu_seg/training/000201/inclusion" in " ".join(result.output.split())
    assert _bytes(manifests) == after

    # views and builds leave the duplicates out; the card counts them
    registry = Registry(manifests, Roots(roots))
    viewed = {r.id for r in registry.view(evaluation="none")}
    assert viewed == set(SD_IDS) | {"neu_seg/training/000204/scratches"}
    out = tmp_path / "built"
    summary = build(registry, out, progress=False)
    assert summary.skipped["duplicate:neu_seg"] == 4
    assert sorted(datasets.load_dataset(str(out), "default", split="train")["id"]) == sorted(viewed)
    assert "| duplicate:neu_seg | 4 |" in (out / "README.md").read_text()


def test_detail_check_keeps_a_transformed_copy_and_refuses_another_texture_on_the_same_layout(tmp_path):
    """A CrackForest road photo (low texture); its 90° rotation, JPEG q20, 3 % crop is marked. A picture with
    its coarse layout but another CrackForest photo's fine texture matches its pHash and fine signature (a
    low-texture false positive of the first two checks): the detail check refuses it, and the report says so."""
    manifests = copy_manifests(tmp_path / "manifests")
    root = tmp_path / "neu_seg"
    photo = [np.asarray(Image.open(SHARED_DATA / "crackforest" / "image" / f"{n:03d}.jpg").convert("L"), np.float32)
             for n in (10, 30)]
    layout, texture = (gaussian_filter(p, 5) for p in photo)
    other = Image.fromarray(np.clip(layout + photo[1] - texture, 0, 255).astype(np.uint8)).convert("RGB")
    original = Image.fromarray(photo[0].astype(np.uint8)).convert("RGB")
    transformed = crop(jpeg(dihedral(original, 5), 20))

    def mask(image: Image.Image) -> np.ndarray:
        values = np.zeros((image.height, image.width), np.uint8)
        values[100:140, 100:160] = 3
        return values

    paths = [_save_neu_seg(root, number, image, mask(image))
             for number, image in (("000301", original), ("000302", transformed), ("000303", other))]
    kept, copy, lookalike = (Image.open(p) for p in paths)
    variants, fine, detail = variant_hashes(kept), fine_signature(kept), detail_thumbnails(kept)
    for image, variant in ((copy, 5), (lookalike, 0)):  # both pass the first two checks
        assert (variants[variant] ^ image_hash(image)).bit_count() <= THRESHOLD
        assert fine_distance(fine, variant, query_signature(image)) <= FINE_THRESHOLD
    assert detail_correlation(detail, 5, query_detail(copy)) >= DETAIL_THRESHOLD
    assert detail_correlation(detail, 0, query_detail(lookalike)) < DETAIL_THRESHOLD
    entry = Catalogue.load(manifests)["neu_seg"]
    records = [r for r in neu_seg_loader.iter_records(root, entry) if isinstance(r, Record)]
    write_manifest(manifests / "neu_seg.jsonl", records)

    result = _runner(manifests, {"neu_seg": root}, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rejected_by_detail"] == {"neu_seg": 1}
    result = _runner(manifests, {"neu_seg": root})
    assert result.exit_code == 0, result.output
    assert "1 record(s) left unmarked: the detail check refused" in " ".join(result.output.split())
    marks = {r.id: r.duplicate_of for r in read_manifest(manifests / "neu_seg.jsonl")}
    assert marks == {"neu_seg/training/000301/scratches": None,
                     "neu_seg/training/000302/scratches": "neu_seg/training/000301/scratches",
                     "neu_seg/training/000303/scratches": None}


def test_kolektorsdd_releases_collapse_to_the_original_publishers(tmp_path):
    """Two releases of one dataset: the one whose catalogue entry says derived_from is marked."""
    manifests = copy_manifests(tmp_path / "manifests")
    catalogue = (manifests / "sources.toml").read_text()
    assert 'derived_from = ["kolektorsdd_original"]' in catalogue  # the YOLO re-release names the original
    yolo = list(read_manifest(Path("manifests/kolektorsdd.jsonl")))[:3]
    write_manifest(manifests / "kolektorsdd.jsonl", yolo)
    original = tmp_path / "original"
    for n, record in enumerate(yolo):  # kosNN/Part0.jpg + Part0_label.bmp, the same pictures
        (original / f"kos{n:02d}").mkdir(parents=True)
        with Image.open(KSDD_ROOT / record.image.path) as image:
            image.convert("L").save(original / f"kos{n:02d}" / "Part0.jpg", quality=92)
        Image.fromarray(record.mask.decode() * 255, "L").save(original / f"kos{n:02d}" / "Part0_label.bmp")
    entry = Catalogue.load(manifests)["kolektorsdd_original"]
    write_manifest(manifests / "kolektorsdd_original.jsonl",
                   [r for r in kolektorsdd_loader.iter_records(original, entry) if isinstance(r, Record)])
    roots = {"kolektorsdd": KSDD_ROOT, "kolektorsdd_original": original}
    result = _runner(manifests, roots)
    assert result.exit_code == 0, result.output
    marks = {r.id: r.duplicate_of for r in read_manifest(manifests / "kolektorsdd.jsonl")}
    assert marks == {r.id: f"kolektorsdd_original/kos{n:02d}/Part0" for n, r in enumerate(yolo)}
    assert all(r.duplicate_of is None for r in read_manifest(manifests / "kolektorsdd_original.jsonl"))


def test_loco_defects_of_one_image_are_not_copies_of_each_other(tmp_path):
    """MVTec LOCO gives one record per defect mask: two contamination masks of one image stay two anomalies;
    the same picture, rotated, in another folder is a copy (and its two records are marked)."""
    manifests = copy_manifests(tmp_path / "manifests")
    root = tmp_path / "mvtec_loco"
    config = json.dumps([{"defect_name": "contamination", "pixel_value": 248, "saturation_threshold": 1.0,
                          "relative_saturation": True}])
    with Image.open(SD_ROOT / "Source Images" / "In_1.bmp") as image:
        picture = image.convert("RGB")
    first, second = np.zeros((200, 200), np.uint8), np.zeros((200, 200), np.uint8)
    first[20:40, 20:60], second[120:150, 100:130] = 248, 248
    for category, k in (("pushpins", 0), ("screw_bag", 5)):  # screw_bag: the same picture, rotated by 90°
        test = root / category / "test" / "structural_anomalies"
        truth = root / category / "ground_truth" / "structural_anomalies" / "000"
        test.mkdir(parents=True)
        truth.mkdir(parents=True)
        (root / category / "defects_config.json").write_text(config)
        dihedral(picture, k).save(test / "000.png")
        for d, mask in enumerate((first, second)):
            dihedral(Image.fromarray(mask, "L"), k).save(truth / f"{d:03d}.png")
    entry = Catalogue.load(manifests)["mvtec_loco"]
    write_manifest(manifests / "mvtec_loco.jsonl",
                   [r for r in get_loader("mvtec_loco").iter_records(root, entry) if isinstance(r, Record)])
    result = _runner(manifests, {"mvtec_loco": root})
    assert result.exit_code == 0, result.output
    marks = {r.id: r.duplicate_of for r in read_manifest(manifests / "mvtec_loco.jsonl")}
    kept = "mvtec_loco/pushpins/structural_anomalies/000/000"
    assert marks == {kept: None, "mvtec_loco/pushpins/structural_anomalies/000/001": None,
                     "mvtec_loco/screw_bag/structural_anomalies/000/000": kept,
                     "mvtec_loco/screw_bag/structural_anomalies/000/001": kept}


def test_origin_priority_follows_derived_from_then_source_then_id(tmp_path):
    catalogue = Catalogue.load(Path("manifests"))
    order = origin_priority(catalogue, ["neu_seg", "daad_online_sources", "sd_saliency_900", "crackforest", "mystery"])
    # neu_seg derives from sd_saliency_900; datasets before web finds; an origin the catalogue lacks after
    assert order == ["crackforest", "sd_saliency_900", "daad_online_sources", "mystery", "neu_seg"]
    manifests = copy_manifests(tmp_path / "m")
    text = (manifests / "sources.toml").read_text().replace(
        "[sd_saliency_900]\n", '[sd_saliency_900]\nderived_from = ["neu_seg"]\n', 1)
    (manifests / "sources.toml").write_text(text)
    with pytest.raises(DedupError, match="cycle"):
        origin_priority(Catalogue.load(manifests), ["neu_seg", "sd_saliency_900"])


def test_duplicate_of_is_checked_and_round_trips():
    line = Path("manifests/sd_saliency_900.jsonl").read_text().splitlines()[0]
    record = Record.from_json(json.loads(line))
    assert record.duplicate_of is None and dumps(record) == line
    marked = replace(record, duplicate_of="neu_seg/test/000001/inclusion")
    assert Record.from_json(json.loads(dumps(marked))) == marked
    with pytest.raises(ValueError, match="must be the id of another record"):
        Record.from_json({**json.loads(line), "duplicate_of": record.id})
