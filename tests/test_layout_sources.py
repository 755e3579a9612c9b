"""Sources read through a catalogue layout (MTD, DeepCrack, BSData, CRACK500, AsphaltCrack300, Cracks and Potholes): their quirks on fake trees of the
published layouts, the committed manifests made from the real files, and the download path of each
pinned commit served from 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, copy_manifests, split_items
from daad.registry.catalogue import Catalogue, CatalogueError
from daad.sources.ingest import ingest
from daad.loaders import get_loader
from daad.loaders.layout import LayoutError, LayoutLoader
from daad.registry.manifest import read_manifest
from daad.sources.archive_sources import DOWNLOADED, PrepareOptions, prepare_source
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.taxonomy import Status
from helpers import fake_datasets as fake
from test_download import ArchiveServer, _path_of, _run, _zip

CATALOGUE = Catalogue.load(REPO / "manifests")
WRITERS = {"mtd": fake.write_mtd, "deepcrack": fake.write_deepcrack, "bsdata": fake.write_bsdata,
           "crack500": fake.write_crack500, "asphaltcrack300": fake.write_asphaltcrack300,
           "cracks_potholes": fake.write_cracks_potholes}

# What the committed manifests hold, counted from the publishers' files (see sources.toml notes).
COMMITTED = {
    "mtd": Counter({("Blowhole", "pits"): 115, ("Break", "crack"): 85, ("Crack", "crack"): 57,
                    ("Fray", "abrasion"): 32, ("Uneven", "abrasion"): 99}),
    "deepcrack": Counter({("crack", "crack"): 537}),
    "bsdata": Counter({("Pitting", "pits"): 394}),
    "crack500": Counter({("crack", "crack"): 1896}),
    "asphaltcrack300": Counter({("crack", "crack"): 795}),
    "cracks_potholes": Counter({("CRACK", "crack"): 1921, ("POTHOLE", "hole"): 564}),
}
NEAR_COPIES = {"crack500": 22, "asphaltcrack300": 29, "mtd": 254, "bsdata": 364, "deepcrack": 2, "cracks_potholes": 37}
"""Records the registry-wide dedup marked on the real files, all copies of records of their own origin: CRACK500
photos stored twice, rotated by 90 or 180 degrees; AsphaltCrack300's photo 002 repeating 001, and re-shot scenes;
MTD's exposures of one tile; BSData's spindles photographed again at the same angle on later dates; DeepCrack's
two train/test copies; Cracks and Potholes' picture published twice and survey frames whose detail coincides."""


def test_layout_sources_have_no_module_but_a_layout_loader():
    for origin in WRITERS:
        assert get_loader(origin) == LayoutLoader(origin)
        assert CATALOGUE[origin].layout is not None


def test_mtd_antialiased_masks_are_binarised_at_128(tmp_path):
    fake.write_mtd(tmp_path)
    records, skipped = split_items(get_loader("mtd").iter_records(tmp_path))
    assert skipped == Counter({"no_annotation": 1, "empty_mask": 1})
    record = next(r for r in records if r.id == "mtd/Blowhole/exp0_num_1")
    grey = fake.antialiased(1)
    assert set(np.unique(grey)) == {0, 127, 128, 255}
    assert np.array_equal(record.mask.decode(), (grey >= 128).astype(np.uint8))
    normals = list(get_loader("mtd").iter_normals(tmp_path))
    assert [n.id for n in normals] == [f"mtd/Free/exp0_num_{100 + i}" for i in range(3)]


def test_deepcrack_ids_splits_and_portrait_images(tmp_path):
    fake.write_deepcrack(tmp_path)
    records, skipped = split_items(get_loader("deepcrack").iter_records(tmp_path))
    assert not skipped
    by_id = {r.id: r for r in records}
    assert sorted(by_id) == sorted(
        [f"deepcrack/train/{s}" for s in ("11111", "11112", "7Q3A9060-1")]
        + [f"deepcrack/test/{s}" for s in ("11125-1", "IMG_6544-2")]
    )
    assert Counter(r.split for r in records) == Counter({"train": 3, "test": 2})
    portrait = by_id["deepcrack/test/IMG_6544-2"]
    assert (portrait.width, portrait.height) == (fake.SIZE, fake.SIZE + 8)
    assert np.array_equal(portrait.mask.decode(), fake.blob(1111, (fake.SIZE, fake.SIZE + 8)))
    assert not list(get_loader("deepcrack").iter_normals(tmp_path))


def test_bsdata_labelme_polygons_unlabelled_normals_and_stray_copy(tmp_path):
    fake.write_bsdata(tmp_path)
    records, skipped = split_items(get_loader("bsdata").iter_records(tmp_path))
    assert not skipped and {r.anomaly_class for r in records} == {"pits"}
    one, two = sorted(records, key=lambda r: r.id)
    assert two.mask.decode()[24, 24] == 1 and one.mask.decode()[24, 24] == 0  # the second polygon
    assert two.area > one.area
    normals = list(get_loader("bsdata").iter_normals(tmp_path))
    assert len(normals) == 3 and all(n.path.parent == tmp_path / "data" for n in normals)  # not data/BSD/test
    assert not {n.id for n in normals} & {r.id for r in records}


def test_crack500_masks_are_read_from_the_folder_of_the_split(tmp_path):
    fake.write_crack500(tmp_path)
    records, skipped = split_items(get_loader("crack500").iter_records(tmp_path))
    assert not skipped
    by_id = {r.id: r for r in records}
    assert sorted(by_id) == sorted(f"crack500/{split}/{name}" for split, names in fake.CRACK500_NAMES.items()
                                   for name in names)
    assert Counter(r.split for r in records) == Counter({"train": 3, "val": 2})
    val = by_id[f"crack500/val/{fake.CRACK500_NAMES['val'][0]}"]  # label/ holds an all-ones file of that name
    assert np.array_equal(val.mask.decode(), fake.blob(1510, (fake.SIZE + 8, fake.SIZE)))
    portrait = by_id["crack500/train/20160302_155914_361_641"]
    assert (portrait.width, portrait.height) == (fake.SIZE, fake.SIZE + 8)
    assert np.array_equal(portrait.mask.decode(), fake.blob(1502, (fake.SIZE, fake.SIZE + 8)))


def test_asphaltcrack300_palette_masks_read_as_drawn(tmp_path):
    fake.write_asphaltcrack300(tmp_path)
    records, skipped = split_items(get_loader("asphaltcrack300").iter_records(tmp_path))
    assert not skipped and [r.id for r in records] == [f"asphaltcrack300/{s}" for s in ("001_04", "001_05", "002_04")]
    for i, record in enumerate(records):  # the white index 0 is the crack, not the black index 1
        assert np.array_equal(record.mask.decode(), fake.blob(1600 + i, (fake.SIZE, fake.SIZE + 8)))


def test_a_group_value_missing_from_a_layout_field_names_the_image(tmp_path):
    fake.write_crack500(tmp_path)
    fake._image(tmp_path / "test" / "20160222_081011_1_1.jpg", 1)
    entry = CATALOGUE["crack500"]
    broken = replace(entry, layout=replace(entry.layout, match=r"(?P<split>train|val|test)/(?P<name>[^/]+)\.jpg"))
    with pytest.raises(LayoutError, match=r"test/20160222_081011_1_1\.jpg: layout field 'masks' has no entry for split 'test'"):
        list(get_loader("crack500").iter_records(tmp_path, broken))


def test_cracks_potholes_one_record_per_drawn_label_mask(tmp_path):
    fake.write_cracks_potholes(tmp_path)
    records, skipped = split_items(get_loader("cracks_potholes").iter_records(tmp_path))
    assert skipped == Counter({"empty_mask": 1})  # both defect masks black: reported once, for the image
    by_id = {r.id: r for r in records}
    both = "1097248_DF_070_070BDF0010_04158"
    assert sorted(by_id) == sorted([  # a black mask is no record; LANE (the road region) never is
        "cracks_potholes/1007599_RS_386_386RS289112_28920/CRACK",
        "cracks_potholes/1008367_RS_386_386RS289112_32760/POTHOLE",
        f"cracks_potholes/{both}/CRACK", f"cracks_potholes/{both}/POTHOLE"])
    crack, pothole = by_id[f"cracks_potholes/{both}/CRACK"], by_id[f"cracks_potholes/{both}/POTHOLE"]
    assert (crack.anomaly_class, pothole.anomaly_class) == ("crack", "hole")
    assert crack.image == pothole.image and crack.image.path == f"Dataset/{both}/{both}_RAW.jpg"
    assert np.array_equal(pothole.mask.decode(), fake.blob(1500 + 20 + 1, (fake.SIZE + 8, fake.SIZE)))
    assert not list(get_loader("cracks_potholes").iter_normals(tmp_path))
    (tmp_path / "Dataset" / both / f"{both}_POTHOLE.png").unlink()
    records, skipped = split_items(get_loader("cracks_potholes").iter_records(tmp_path))
    assert len(records) == 3 and skipped == Counter({"empty_mask": 1, "no_annotation": 1})

def test_labelme_file_with_two_labels_or_broken_json_is_reported(tmp_path):
    fake.write_bsdata(tmp_path)
    first, second = sorted((tmp_path / "label").glob("*.json"))
    data = json.loads(first.read_text())
    data["shapes"].append({**data["shapes"][0], "label": "Rust"})
    first.write_text(json.dumps(data))
    second.write_text("{not json")
    records, skipped = split_items(get_loader("bsdata").iter_records(tmp_path))
    assert records == [] and skipped == Counter({"bad_annotation": 2})


@pytest.mark.parametrize("table, message", [
    ('images = "*.jpg"\nmatch = "(?P<name>.+)\\\\.jpg"\nid = "{name}"\nmask = "{stem}.png"', "'stem'"),
    ('images = "*.jpg"\nmatch = "(?P<name>.+)\\\\.jpg"\nid = "{name}"\nmask = "{name}.png"\nmask_format = "coco"',
     "mask_format"),
    ('images = "*.jpg"\nmatch = "(?P<name>.+"\nid = "{name}"\nmask = "{name}.png"', "match"),
    ('images = "*.jpg"\nmatch = "(?P<name>.+)"\nid = "{name}"\nmask = "{name}.png"\nmasks = "x"', "masks"),
    ('images = "../*.jpg"\nmatch = "(?P<name>.+)"\nid = "{name}"\nmask = "{name}.png"\nlabel = "x"', "root"),
    ('images = "*.jpg"\nmatch = "(?P<name>.+)"\nid = "{name}"\nmask = "{name}.png"', "label"),
    ('images = "*.jpg"\nmatch = "(?P<name>.+)"\nid = "{name}"\nmask = "{dir}/{name}.png"\nlabel = "x"\n'
     'fields = {dir = {split = {a = "b"}}}', "field 'dir'"),
    ('images = "*.jpg"\nmatch = "(?P<name>.+)"\nid = "{name}"\nmask = "{name}/{name}.png"\nlabel = "x"\n'
     'fields = {name = {name = {a = "b"}}}', "field 'name'"),
    ('images = "*.jpg"\nmatch = "(?P<name>.+)"\nid = "{name}"\nmask = "{name}_{label}.png"\nlabels = ["A", "B"]',
     "label"),
    ('images = "*.jpg"\nmatch = "(?P<name>.+)"\nid = "{name}/{label}"\nmask = "{name}_{label}.png"\n'
     'labels = ["A"]\nmask_format = "labelme"', "labels"),
])
def test_bad_layout_table_is_refused_naming_the_origin(tmp_path, table, message):
    manifests = copy_manifests(tmp_path / "manifests")
    with open(manifests / "sources.toml", "a", encoding="utf-8") as f:
        f.write(f'\n[mine]\nname = "x"\nhomepage = "https://example.org"\nlicence = "unknown"\n\n[mine.layout]\n{table}\n')
    with pytest.raises(CatalogueError, match=rf"source 'mine'.*{message}"):
        Catalogue.load(manifests)


@pytest.mark.parametrize("origin", sorted(COMMITTED))
def test_committed_manifest_is_consistent(origin):
    records = list(read_manifest(REPO / "manifests" / f"{origin}.jsonl"))
    entry = CATALOGUE[origin]
    assert Counter((r.native_label, r.anomaly_class) for r in records) == COMMITTED[origin]
    ids = [r.id for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    pattern = re.compile(entry.layout.match)
    for record in records:
        assert record.status is Status.ACCEPTED and record.licence == entry.licence and record.origin == origin
        assert pattern.fullmatch(record.image.path), record.image.path
        assert re.fullmatch(r"[0-9a-f]{64}", record.image.sha256) and record.area > 0
    images = {r.image.path: r.image.sha256 for r in records}  # Cracks and Potholes: a record per label, same image
    assert len(images) == len(records) - (252 if origin == "cracks_potholes" else 0)
    # ... and one picture published twice (917232_RS_290_290RS294095_19613, 917233_..._19615)
    assert len(set(images.values())) == len(images) - (origin == "cracks_potholes")
    if origin == "deepcrack":
        assert Counter(r.split for r in records) == Counter({"train": 300, "test": 237})
    if origin == "crack500":
        assert Counter(r.split for r in records) == Counter({"train": 1517, "val": 379})
    marked = {r.id: r.duplicate_of for r in records if r.duplicate_of is not None}
    assert len(marked) == NEAR_COPIES.get(origin, 0)
    assert all(kept.startswith(f"{origin}/") and kept not in marked for kept in marked.values())


# ---- the download path: the pinned commit's archive, served from 127.0.0.1 -------------------------

CRACK_DATASET_EXTRAS = ("ReadMe.md", "CFD/train/img1.jpg", "CFD/label/img1.png", "CFD/val/img2.jpg")
REPO_EXTRAS = {"mtd": ("dataset.jpg",), "deepcrack": ("Web App/main.py",), "bsdata": ("split_dataset.py",),
               "crack500": CRACK_DATASET_EXTRAS, "asphaltcrack300": CRACK_DATASET_EXTRAS,
               "cracks_potholes": ("README.md",)}
"""Files of each repository outside the data (the archive holds the whole repository; they are not unpacked).
CRACK500 and AsphaltCrack300 are two folders of one repository, served as one archive as GitHub does."""


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """Each layout source's fake tree, ingested into scratch manifests and served as its pinned commit archive."""
    base = tmp_path_factory.mktemp("mirror")
    manifests = copy_manifests(base / "manifests")
    server = ArchiveServer()
    archives: dict[str, dict[str, bytes]] = {}
    for origin, write in WRITERS.items():
        write(base / "src" / origin)
        ingest(get_loader(origin).iter_records(base / "src" / origin, CATALOGUE[origin]), manifests / f"{origin}.jsonl")
        spec = CATALOGUE[origin].download
        top = spec.subpath.split("/")[0]
        entries = archives.setdefault(_path_of(CATALOGUE, origin), {})
        entries |= {f"{spec.subpath}/{p.relative_to(base / 'src' / origin).as_posix()}": p.read_bytes()
                    for p in sorted((base / "src" / origin).rglob("*")) if p.is_file()}
        entries |= {f"{top}/{extra}": b"not data\n" for extra in REPO_EXTRAS[origin]}
    for path, entries in archives.items():
        server.files[path] = _zip(entries)
    yield base, manifests, server
    server.close()


@pytest.mark.parametrize("origin", sorted(WRITERS))
def test_pinned_archive_reproduces_the_manifest(mirror, tmp_path, origin):
    base, manifests, server = mirror
    data = tmp_path / "data"
    registry = Registry(manifests, Roots(data=data))
    options = PrepareOptions(data=data, accepted=frozenset({CATALOGUE[origin].licence}), base_url=server.url,
                             timeout=10, retries=0, progress=False)
    outcome = prepare_source(registry, registry.catalogue[origin], options)
    committed = list(read_manifest(manifests / f"{origin}.jsonl"))
    assert (outcome.status, outcome.files) == (DOWNLOADED, len(committed))
    named = {r.image.path for r in committed}
    unpacked = {p.relative_to(data / origin).as_posix() for p in (data / origin).rglob("*") if p.is_file()}
    keep = CATALOGUE[origin].download.keep
    assert named <= unpacked  # only the manifest's images and `keep` are unpacked
    assert all(path in named or any(fnmatchcase(path, k) for k in keep) for path in unpacked), unpacked
    assert not any((data / origin / extra).exists() for extra in REPO_EXTRAS[origin])
    again = tmp_path / "again.jsonl"
    ingest(get_loader(origin).iter_records(data / origin, CATALOGUE[origin]), again)
    assert again.read_bytes() == (manifests / f"{origin}.jsonl").read_bytes()
    assert [r.image.sha256 for r in read_manifest(again)] == [r.image.sha256 for r in committed]


def test_one_command_builds_the_layout_sources_from_the_mirror(mirror, tmp_path):
    base, manifests, server = mirror
    env = {"DAAD_DATA_DIR": str(tmp_path / "data"), "DAAD_DOWNLOAD_BASE_URL": server.url,
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}
    accept = [a for origin in WRITERS for a in ("--accept-licence", CATALOGUE[origin].licence)]
    before = Counter(server.hits)
    done = _run("build", "--manifests", str(manifests), "--out", str(tmp_path / "out" / "daad"), "--quiet",
                "--workers", "1", *[a for o in WRITERS for a in ("--origin", o)], *accept, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "built 25 rows from 6 origin(s); rejected 0" in done.stdout
    shards = sorted(p.relative_to(tmp_path / "out" / "daad" / "data").as_posix()
                    for p in (tmp_path / "out" / "daad" / "data").rglob("*.parquet"))
    assert shards == ["asphaltcrack300/crack.parquet", "bsdata/pits.parquet", "crack500/crack.parquet",
                      "cracks_potholes/crack.parquet", "cracks_potholes/hole.parquet",
                      "deepcrack/crack.parquet", "mtd/abrasion.parquet", "mtd/crack.parquet", "mtd/pits.parquet"]
    # CRACK500 and AsphaltCrack300 unpack one archive: fetched once, and no archive is left behind.
    assert {path: server.hits[path] - before[path] for path in server.files} == {path: 1 for path in server.files}
    assert not list((tmp_path / "data" / ".daad" / "archives").iterdir())


@pytest.mark.parametrize("origin", ["aebad", "rsdds"])
def test_paper_sources_read_as_layout_data(origin, tmp_path):
    """AeBAD-S and RSDDs (Type-I/II), two of the paper's nine datasets, have no module: their
    published trees are catalogue layouts; classes per defect type where the release names one."""
    expected = getattr(fake, f"write_{origin}")(tmp_path)
    assert get_loader(origin) == LayoutLoader(origin)
    records, skipped = split_items(get_loader(origin).iter_records(tmp_path))
    assert not skipped
    assert Counter(r.native_label for r in records) == Counter(expected.records)
    by_id = {r.id: r for r in records}
    if origin == "aebad":
        assert {r.native_label: r.anomaly_class for r in records} == {
            "ablation": "abrasion", "fracture": "crack", "groove": "scratch"}
        record = by_id["aebad/test/ablation/view/001"]
        assert np.array_equal(record.mask.decode(), fake.blob(3211)) and record.split == "test"
        assert [n.id for n in get_loader(origin).iter_normals(tmp_path)] == [
            "aebad/test/good/same/000", "aebad/train/good/background/000"]
    else:
        assert {r.anomaly_class for r in records} == {"unmapped"}  # no defect types in the release
        record = by_id["rsdds/Type-II/rail_1"]
        assert (record.width, record.height) == (fake.SIZE // 2, 3 * fake.SIZE)
        # JPEG masks: binarised at 128, the rectangle comes back whole
        assert np.array_equal(record.mask.decode(), fake.blob(3311, (fake.SIZE // 2, 3 * fake.SIZE)))
