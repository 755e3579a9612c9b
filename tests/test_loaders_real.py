"""Loaders on the real public data in ../shared/data: counts, class maps, cross-checks."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SD_ROOT, SHARED_DATA, committed_without_marks, split_items
from daad.annotations.yolo_seg import rasterise, read_polygons
from daad.sources.ingest import ingest
from daad.loaders import crackforest, get_loader, kolektorsdd
from daad.loaders.base import Skipped
from daad.registry.roots import fetched_image_path

CF_ROOT = SHARED_DATA / "crackforest"
KSDD_ROOT = SHARED_DATA / "kolektorsdd-yolo"


def test_crackforest_counts_and_seg_matches_mat():
    records, skipped = split_items(crackforest.iter_records(CF_ROOT))
    assert len(records) == 118 and skipped == {"no_annotation": 37}
    assert {r.anomaly_class for r in records} == {"crack"}
    assert {r.native_id for r in records} == {f"{i:03d}" for i in range(1, 119)}
    # The .seg run-length reading equals the independent .mat ground truth, pixel for pixel
    # (tolerance 0.5% of the crack pixels, measured: 0 differing pixels on all 118).
    for record in records[::10]:
        seg, mat = record.mask.decode(), crackforest.mat_mask(CF_ROOT, record.native_id)
        assert (seg != mat).sum() <= 0.005 * mat.sum()


def test_kolektorsdd_counts_and_polygon_area():
    records, skipped = split_items(kolektorsdd.iter_records(KSDD_ROOT))
    normals = list(kolektorsdd.iter_normals(KSDD_ROOT))
    assert len(records) == 52 and not skipped and len(normals) == 347
    assert not {r.id for r in records} & {n.id for n in normals}
    multi = 0
    for record in records:
        split, stem = record.native_id.split("/")
        polygons = read_polygons(KSDD_ROOT / "Datasets" / "labels" / split / f"{stem}.txt")
        multi += len(polygons) > 1
        shoelace = sum(p.area(record.width, record.height) for p in polygons)
        perimeter = sum(p.perimeter(record.width, record.height) for p in polygons)
        # Rasterising counts the pixels the outline touches: the pixel count exceeds the exact
        # (shoelace) area by at most half a pixel along the perimeter (measured worst: 0.47).
        assert 0 <= record.area - shoelace <= 0.5 * perimeter, record.id
    assert multi >= 1  # several polygons share an image


def test_yolo_rasterise_square():
    from daad.annotations.yolo_seg import Polygon

    square = Polygon(0, np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]))
    mask = rasterise([square], 40, 40)
    # Every pixel whose centre is inside is set; the outline adds at most one row/column.
    assert mask[10:30, 10:30].all() and 20 * 20 <= mask.sum() <= 21 * 21
    assert not mask[:9].any() and not mask[:, :9].any()


@pytest.mark.parametrize(
    ("origin", "root", "expected"),
    [
        ("crackforest", CF_ROOT, 118),
        ("kolektorsdd", KSDD_ROOT, 52),
        ("sd_saliency_900", SD_ROOT, 900),
        ("daad_online_sources", SHARED_DATA / "daad-online-sources", 1126),
    ],
)
def test_committed_manifests_are_reproducible(tmp_path, origin, root, expected):
    manifest = tmp_path / f"{origin}.jsonl"
    report = ingest(get_loader(origin).iter_records(root), manifest)
    assert report.accepted == expected
    assert manifest.read_bytes() == committed_without_marks(origin)


def test_sd_saliency_classes():
    records, skipped = split_items(get_loader("sd_saliency_900").iter_records(SD_ROOT))
    assert not skipped
    assert Counter(r.anomaly_class for r in records) == {"impurity": 300, "stain": 300, "scratch": 300}
    sample = records[0]
    truth = np.asarray(Image.open(SD_ROOT / "Ground truth" / f"{sample.native_id}.png").convert("L")) > 127
    assert np.array_equal(sample.mask.decode().astype(bool), truth)


# --- the DAAD authors' online list ---------------------------------------------------

ONLINE_ROOT = SHARED_DATA / "daad-online-sources"
SHEET_ROWS = {"crack": 221, "scratch": 195, "hole": 201, "orifice": 164, "stain": 163, "pits": 199,
              "impurity": 101, "abrasion": 137}
SHEET_NAMES = {"AeBAD": "aebad", "DAGM2007": "dagm2007", "Magnetic_tile": "mtd", "MVTec": "mvtec_ad",
               "MVtec_LOCO_AD": "mvtec_loco", "RSDDs": "rsdds", "VisA": "visa", "VTADL[BATD]": "btad",
               "crackForsest": "crackforest"}


@pytest.fixture(scope="module")
def online_items():
    return list(get_loader("daad_online_sources").iter_records(ONLINE_ROOT))


def test_online_list_every_row_accounted_for(online_items):
    per_class: dict[str, Counter] = {c: Counter() for c in SHEET_ROWS}
    for item in online_items:
        kind = item.reason if isinstance(item, Skipped) else "record"
        per_class[item.id.split("/")[1]][kind] += 1
    for cls, rows in SHEET_ROWS.items():
        counts = per_class[cls]
        assert set(counts) <= {"record", "duplicate_row", "note"}, cls
        assert counts["record"] + counts["duplicate_row"] + counts["note"] == rows, (cls, counts)
    assert sum(SHEET_ROWS.values()) == 1381 == len(online_items)
    # Measured on the published file: 1126 distinct entries, 253 merged rows, 2 title-only notes.
    assert sum(c["record"] for c in per_class.values()) == 1126
    assert sum(c["duplicate_row"] for c in per_class.values()) == 253
    assert sum(c["note"] for c in per_class.values()) == 2


def test_online_list_kinds_of_rows(online_items):
    records = {r.id: r for r in online_items if not isinstance(r, Skipped)}
    # search-result link -> the image URL of its mediaurl= parameter, percent-decoded
    first = records["daad_online_sources/crack/0001"]
    assert first.image.url.startswith("https://ts1.cn.mm.bing.net/th/id/R-C.659702b12d4b0b1d3a5336fd28f8b3c6?")
    assert first.status == "needs_image" and first.page_url is None
    # a URL without scheme gets https://
    assert records["daad_online_sources/pits/0198"].image.url.startswith("https://baidu.com/it/u=1874363591")
    # a title cell whose hyperlink is the image
    assert records["daad_online_sources/abrasion/0123"].image.url.startswith("https://img2.baidu.com/it/u=4007332131")
    # article pages are kept as pages
    page = records["daad_online_sources/impurity/0001"]
    assert page.page_url == "https://www.zjrob.com/news/939.html" and page.image.url is None
    # the authors' own photographs: 18 rows, no URL
    own = [r for r in records.values() if r.source == "reality_photo"]
    assert len(own) == 18 and all(r.image.url is None and r.native_label == "crack" and r.note for r in own)
    # inline data: images are decoded offline into the fetch cache, pinned, and await a mask
    inline = [r for r in records.values() if r.status == "needs_mask"]
    assert len(inline) == 16
    for record in inline:
        path = fetched_image_path(record.image.sha256)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record.image.sha256 and record.width > 0
    # the cell cut at Excel's 32767-character limit is reported, not crashed on
    assert records["daad_online_sources/orifice/0016"].reason == "inline_corrupt_image"
    # every extracted URL has a scheme
    assert all(r.image.url.startswith(("http://", "https://")) for r in records.values() if r.image.url)


def test_online_list_existing_datasets_are_the_catalogue_paper_entries():
    from daad.registry.catalogue import Catalogue
    from daad.loaders.daad_online_sources import existing_datasets

    names = existing_datasets(ONLINE_ROOT)
    assert len(names) == 9
    catalogue = Catalogue.load(REPO / "manifests")
    assert {SHEET_NAMES[n] for n in names} == {e.id for e in catalogue if e.in_daad_paper}


def test_online_classify_cells():
    from daad.loaders.daad_online_sources import classify

    cell = classify("https://www.google.com/imgres?imgurl=https%3A%2F%2Fwww.ccnta.cn%2Fa%2Fb.jpg&tbnid=x", None)
    assert (cell.kind, cell.url) == ("image_url", "https://www.ccnta.cn/a/b.jpg")
    cell = classify("https://image.baidu.com/search/detail?ct=1&objurl=http%3A%2F%2Fimg.x.cn%2F1.png&fromurl=y", None)
    assert (cell.kind, cell.url) == ("image_url", "http://img.x.cn/1.png")
    assert classify("new.qq.com/omn/20190712/a.html", None).url == "https://new.qq.com/omn/20190712/a.html"
    assert classify("new.qq.com/omn/20190712/a.html", None).kind == "page"
    assert classify("some title (zhihu.com)", "https://zhuanlan.zhihu.com/p/1").url == "https://zhuanlan.zhihu.com/p/1"
    assert classify("some title (zhihu.com)", None).kind == "note"
    assert classify("reality ohotographing", None).kind == "reality_photo"
