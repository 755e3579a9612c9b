"""Loaders of sources not in ../shared/data, on fake trees shaped like their releases."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conftest import split_items
from daad.registry.catalogue import Catalogue
from daad.sources.ingest import ingest
from daad.loaders import get_loader
from daad.registry.manifest import default_manifests_dir, read_manifest
from daad.taxonomy import ANOMALY_CLASSES, UNMAPPED, Source, Status
from helpers import fake_datasets as fake
from helpers.layout_trees import has_data_layout, write_layout_tree

CATALOGUE = Catalogue.load(default_manifests_dir())

WRITERS = {
    "mtd": fake.write_mtd,
    "deepcrack": fake.write_deepcrack,
    "bsdata": fake.write_bsdata,
    "cracks_potholes": fake.write_cracks_potholes,
    "mvtec_ad": fake.write_mvtec_ad,
    "mpdd": fake.write_mpdd,
    "visa": fake.write_visa,
    "ksdd2": fake.write_ksdd2,
    "btad": fake.write_btad,
    "mvtec_loco": fake.write_mvtec_loco,
    "autovi": fake.write_autovi,
    "dagm2007": fake.write_dagm2007,
    "kolektorsdd_original": fake.write_kolektorsdd_original,
    "folder": fake.write_folder,
    "neu_seg": fake.write_neu_seg,
    "adam_3d": fake.write_adam_3d,
}


@pytest.mark.parametrize("origin", sorted(WRITERS))
def test_loader_reads_its_published_layout(tmp_path, origin):
    expected = WRITERS[origin](tmp_path / origin)
    loader = get_loader(origin)
    records, skipped = split_items(loader.iter_records(tmp_path / origin))
    normals = list(loader.iter_normals(tmp_path / origin))

    assert Counter(r.native_label for r in records) == expected.records
    assert skipped == expected.skipped
    assert len(normals) == expected.normals and all(n.path.is_file() for n in normals)
    assert not {r.id for r in records} & {n.id for n in normals}
    entry = CATALOGUE[origin]
    for record in records:
        assert record.id.startswith(f"{origin}/") and record.origin == origin
        if origin == "visa":  # mapped per defect: see test_visa_classes_are_mapped_per_defect
            assert record.anomaly_class == get_loader("visa").anomaly_class(entry, *_visa_defects(record))[0]
            assert record.native_id.startswith(record.native_label.split("/")[0] + "/")
        else:
            assert record.anomaly_class == entry.map_class(record.native_label)
        assert (tmp_path / origin / record.image.path).is_file()
        if record.mask is not None:
            assert record.area > 0 and record.mask.decode().sum() == record.area

    # Ingest writes a valid manifest and counts the unmapped native types, never drops them.
    manifest = tmp_path / "manifests" / f"{origin}.jsonl"
    report = ingest(loader.iter_records(tmp_path / origin), manifest)
    assert [r.id for r in read_manifest(manifest)] == sorted(r.id for r in records)
    assert report.unmapped == Counter(r.native_label for r in records if r.anomaly_class == UNMAPPED)
    if origin != "visa":
        assert report.unmapped == Counter(
            {label: n for label, n in expected.records.items() if entry.map_class(label) == UNMAPPED}
        )


def _visa_defects(record):
    category, names = record.native_label.split("/", 1)
    return category, tuple(names.split(","))


def test_mvtec_ad_catalogue_maps_all_73_types():
    classes = CATALOGUE["mvtec_ad"].classes
    assert len(classes) == 73
    assert len({k.split("/")[0] for k in classes}) == 15
    assert {"cable/bent_wire", "cable/cable_swap", "transistor/misplaced"} <= set(CATALOGUE["mvtec_ad"].unmapped)
    assert set(classes.values()) - {UNMAPPED} <= set(ANOMALY_CLASSES)


def test_mvtec_loco_gives_one_record_per_defect_named_by_its_pixel_value(tmp_path):
    """Each ground-truth file is one defect: its mask is that file's pixels, its name the config's for their value."""
    fake.write_mvtec_loco(tmp_path)
    records, skipped = split_items(get_loader("mvtec_loco").iter_records(tmp_path))
    assert not skipped
    got = {r.id: (r.native_label, r.anomaly_class) for r in records}
    assert got == {
        "mvtec_loco/breakfast_box/logical_anomalies/000/000": ("breakfast_box/missing_almonds", UNMAPPED),
        "mvtec_loco/breakfast_box/logical_anomalies/001/000": ("breakfast_box/nectarines_0_tangerines_0", UNMAPPED),
        "mvtec_loco/breakfast_box/logical_anomalies/001/001": ("breakfast_box/overflow", UNMAPPED),
        "mvtec_loco/breakfast_box/structural_anomalies/000/000": ("breakfast_box/contamination", "impurity"),
        "mvtec_loco/breakfast_box/structural_anomalies/001/000": ("breakfast_box/box_damaged", UNMAPPED),
        "mvtec_loco/breakfast_box/structural_anomalies/001/001": ("breakfast_box/contamination", "impurity"),
        "mvtec_loco/pushpins/logical_anomalies/000/000": ("pushpins/missing_pushpin", UNMAPPED),
        "mvtec_loco/pushpins/logical_anomalies/001/000": ("pushpins/additional_1_pushpin", UNMAPPED),
        "mvtec_loco/pushpins/logical_anomalies/001/001": ("pushpins/missing_separator", UNMAPPED),
        "mvtec_loco/pushpins/structural_anomalies/000/000": ("pushpins/broken", "crack"),
        "mvtec_loco/pushpins/structural_anomalies/001/000": ("pushpins/color", "stain"),
        "mvtec_loco/pushpins/structural_anomalies/001/001": ("pushpins/contamination", "impurity"),
    }
    color, contamination = (r for r in records if r.id.startswith("mvtec_loco/pushpins/structural_anomalies/001/"))
    raw = np.asarray(Image.open(tmp_path / "pushpins/ground_truth/structural_anomalies/001/001.png"))
    assert set(np.unique(raw)) == {0, 248}  # contamination's published value, not 255
    assert np.array_equal(contamination.mask.decode(), (raw > 0).astype(np.uint8))
    assert not np.array_equal(color.mask.decode(), contamination.mask.decode())
    assert color.image == contamination.image and color.split == "test"  # two defects of one image


def test_loco_catalogue_maps_structural_defects_only():
    """Every published LOCO defect has an entry; no logical anomaly maps to a class; AutoVI maps only cardboard."""
    classes = CATALOGUE["mvtec_loco"].classes
    for category, names in fake.LOCO_DEFECTS.items():
        assert {f"{category}/{n}" for n in names} <= set(classes)
    logical = {f"{c}/{n}" for c, kinds in fake.LOCO_IMAGES.items() for n in sum(kinds["logical_anomalies"], ())}
    assert logical <= set(CATALOGUE["mvtec_loco"].unmapped)
    assert {"pushpins/broken": "crack", "screw_bag/bag_broken": "hole", "splicing_connectors/contamination": "impurity",
            "juice_bottle/juice_color": "stain"}.items() <= classes.items()
    assert set(classes.values()) - {UNMAPPED} <= set(ANOMALY_CLASSES)
    assert {k for k, v in CATALOGUE["autovi"].classes.items() if v != UNMAPPED} == {"engine_wiring/cardboard"}


def test_loco_faults_are_skipped_by_name_and_counted(tmp_path):
    expected = fake.write_mvtec_loco_with_faults(tmp_path)
    records, skipped = split_items(get_loader("mvtec_loco").iter_records(tmp_path))
    assert Counter(r.native_label for r in records) == expected.records  # every good mask still gives its record
    assert skipped == expected.skipped and set(skipped) == {
        "unknown_mask_value", "several_mask_values", "empty_mask", "corrupt_mask", "no_annotation",
        "defect_not_in_catalogue", "no_defects_config", "bad_defects_config"}
    report = ingest(get_loader("mvtec_loco").iter_records(tmp_path), tmp_path / "manifests" / "mvtec_loco.jsonl")
    assert report.accepted == expected.total and report.skipped == expected.skipped


def test_visa_small_integer_masks_keep_every_defect(tmp_path):
    fake.write_visa(tmp_path)
    records, _ = split_items(get_loader("visa").iter_records(tmp_path))
    record = next(r for r in records if r.id == "visa/candle/000")
    raw = np.asarray(Image.open(tmp_path / "candle/Data/Masks/Anomaly/000.png"))
    assert set(np.unique(raw)) == {0, 4}  # a defect id, as VisA publishes it, not 255
    assert np.array_equal(record.mask.decode(), (raw > 0).astype(np.uint8)) and record.split == "test"


def test_visa_classes_are_mapped_per_defect(tmp_path):
    """image_anno.csv names each image's defects: one DAAD class when they agree, else unmapped."""
    fake.write_visa(tmp_path)
    records, skipped = split_items(get_loader("visa").iter_records(tmp_path))
    got = {r.id: (r.native_label, r.anomaly_class) for r in records}
    assert got == {
        "visa/candle/000": ("candle/different colour spot", "stain"),
        # Two defects of different classes, the mask's values their id2class ids: one record each.
        "visa/candle/001/chunk_of_wax_missing": ("candle/chunk of wax missing", "pits"),
        "visa/candle/001/foreign_particals_on_candle": ("candle/foreign particals on candle", "impurity"),
        "visa/candle/002": ("candle/weird candle wick", UNMAPPED),
        "visa/pcb1/000": ("pcb1/melt", "stain"),
        "visa/pcb1/001": ("pcb1/scratch", "scratch"),
        "visa/pcb1/002/bent": ("pcb1/bent", UNMAPPED),
        "visa/pcb1/002/melt": ("pcb1/melt", "stain"),
        # Values 1 and 5 are not burnt (1) and scratch (2): one unmapped record for the whole mask.
        "visa/pcb4/000": ("pcb4/burnt,scratch", UNMAPPED),
    }
    assert not skipped
    raw = np.asarray(Image.open(tmp_path / "pcb1/Data/Masks/Anomaly/002.png"))
    melt = next(r for r in records if r.id == "visa/pcb1/002/melt")
    assert np.array_equal(melt.mask.decode(), (raw == 2).astype(np.uint8)) and "split" in melt.note
    whole = next(r for r in records if r.id == "visa/pcb4/000")
    assert whole.note == "one mask covers defects of classes scratch, stain" and whole.area == (
        np.asarray(Image.open(tmp_path / "pcb4/Data/Masks/Anomaly/000.png")) > 0).sum()
    # A defect name the catalogue does not decide is kept, unmapped, and says so.
    anno = tmp_path / "pcb1" / "image_anno.csv"
    anno.write_text(anno.read_text().replace(",scratch,", ",Solder  Bridge,"))
    record = next(r for r in split_items(get_loader("visa").iter_records(tmp_path))[0] if r.id == "visa/pcb1/001")
    assert (record.native_label, record.anomaly_class) == ("pcb1/solder bridge", UNMAPPED)
    assert record.note == "defect name(s) not in the catalogue: solder bridge"


def test_btad_reads_png_and_bmp_masks(tmp_path):
    fake.write_btad(tmp_path)
    records, skipped = split_items(get_loader("btad").iter_records(tmp_path))
    by_product = Counter(r.native_label.split("/")[0] for r in records)
    assert by_product == {"01": 2, "02": 2, "03": 2} and skipped == {"no_annotation": 1}
    bmp = next(r for r in records if r.id == "btad/03/ko/0001")
    assert bmp.image.path == "03/test/ko/0001.bmp" and np.array_equal(bmp.mask.decode(), fake.blob(401))


def test_dagm_weak_labels_are_marked_weak_masks(tmp_path):
    fake.write_dagm2007(tmp_path)
    records, _ = split_items(get_loader("dagm2007").iter_records(tmp_path))
    assert {(r.status, r.weak_mask) for r in records} == {(Status.ACCEPTED, True)}
    manifest = tmp_path / "dagm2007.jsonl"
    ingest(iter(records), manifest)
    assert all('"weak_mask": true' in line for line in manifest.read_text().splitlines())
    assert all(r.weak_mask for r in read_manifest(manifest))
    assert {r.split for r in records} == {"train", "test"}


def test_folder_masks_from_every_format(tmp_path):
    fake.write_folder(tmp_path)
    records = {r.native_id: r for r in split_items(get_loader("folder").iter_records(tmp_path))[0]}
    a, b, c, d, e, f = (records[f"images/{k}"] for k in "abcdef")
    assert np.array_equal(a.mask.decode(), fake.blob(1)) and a.image.url == "https://example.org/a.jpg"
    assert a.licence == "CC-BY-4.0" and a.source is Source.ONLINE_SEARCH
    assert b.source is Source.REALITY_PHOTO and b.note == "own photo" and np.array_equal(b.mask.decode(), fake.blob(2))
    # COCO: a 10x8 rectangle and a right triangle with legs 8, rasterised by pycocotools.
    assert 80 <= c.area <= 99 + 45
    assert c.mask.decode()[5, 5] == 1 and c.mask.decode()[26, 27] == 1 and c.mask.decode()[27, 21] == 0
    # LabelMe: polygon + rectangle; EISeg: a 10x10 square.
    assert d.mask.decode()[17, 20] == 1 and d.mask.decode()[2, 8] == 1
    assert 100 <= e.area <= 121
    assert f.status is Status.NEEDS_MASK and f.mask is None and f.image.sha256 and f.phash


def test_neu_seg_keeps_its_split_in_the_id_and_one_record_per_class(tmp_path):
    fake.write_neu_seg(tmp_path)
    records, _ = split_items(get_loader("neu_seg").iter_records(tmp_path))
    ids = {r.id: r for r in records}
    assert set(ids) == {
        "neu_seg/training/000201/inclusion", "neu_seg/training/000202/patches",
        "neu_seg/training/000202/scratches", "neu_seg/training/000204/scratches", "neu_seg/test/000201/inclusion",
    }
    assert ids["neu_seg/test/000201/inclusion"].image.sha256 != ids["neu_seg/training/000201/inclusion"].image.sha256
    patches, scratches = ids["neu_seg/training/000202/patches"], ids["neu_seg/training/000202/scratches"]
    assert patches.image == scratches.image and patches.split == "training"
    assert not (patches.mask.decode() & scratches.mask.decode()).any()
    with Image.open(tmp_path / "annotations" / "training" / "000202.png") as mask:
        assert patches.area == int((np.asarray(mask) == 2).sum())
    assert CATALOGUE["neu_seg"].derived_from == ("sd_saliency_900",)


def test_catalogue_entries_are_complete_and_agree_with_the_licence_table():
    from daad.licences import LicenceCatalogue

    licences = LicenceCatalogue.load(default_manifests_dir()).licences
    for entry in CATALOGUE:
        assert entry.licence in licences, entry.id
        assert entry.homepage.startswith("https://"), entry.id
        if entry.commercial_use is not None:
            assert entry.commercial_use == licences[entry.licence].commercial, entry.id
        if entry.id != "folder":
            assert entry.citation.startswith("@"), entry.id
    assert CATALOGUE["kolektorsdd"].derived_from == ("kolektorsdd_original",)
    assert {e.id for e in CATALOGUE if e.in_daad_paper} == {
        "aebad", "btad", "crackforest", "dagm2007", "mtd", "mvtec_ad", "mvtec_loco", "rsdds", "visa"
    }


def test_visa_catalogue_maps_every_defect_of_every_category():
    """Every defect id2class names (layout.mask_values) has a class, and nothing else does."""
    entry = CATALOGUE["visa"]
    values = entry.layout["mask_values"]
    assert sorted(values) == sorted(get_loader("visa").CATEGORIES)
    assert {f"{c}/{name}" for c, names in values.items() for name in names} == set(entry.classes)
    assert {c for c in entry.classes.values() if c != UNMAPPED} <= set(ANOMALY_CLASSES)


LAYOUT_ORIGINS = sorted(e.id for e in CATALOGUE if has_data_layout(e))


def test_the_sources_with_a_data_layout_are_known():
    assert {"mtd", "deepcrack", "bsdata", "mvtec_ad", "mpdd", "btad"} <= set(LAYOUT_ORIGINS)


@pytest.mark.parametrize("origin", LAYOUT_ORIGINS)
def test_a_data_layout_reads_the_tree_its_catalogue_entry_describes(tmp_path, origin):
    """The fake tree comes from the catalogue entry alone: a source added with a layout table is tested here."""
    entry = CATALOGUE[origin]
    expected = write_layout_tree(entry, tmp_path)
    loader = get_loader(origin)
    records, skipped = split_items(loader.iter_records(tmp_path, entry))
    assert Counter(r.native_label for r in records) == expected.records and expected.total > 0
    assert skipped == Counter()
    assert len(list(loader.iter_normals(tmp_path))) == expected.normals
    assert all(r.anomaly_class == entry.map_class(r.native_label) and r.area > 0 for r in records)
