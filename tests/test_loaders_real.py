"""Loaders on the real public data in ../shared/data: counts, class maps, cross-checks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SD_ROOT, SHARED_DATA
from daad.annotations.yolo_seg import rasterise, read_polygons
from daad.ingest import ingest
from daad.loaders import crackforest, get_loader, kolektorsdd
from daad.loaders.base import Skipped

CF_ROOT = SHARED_DATA / "crackforest"
KSDD_ROOT = SHARED_DATA / "kolektorsdd-yolo"


def _split(items):
    records, skipped = [], Counter()
    for item in items:
        if isinstance(item, Skipped):
            skipped[item.reason] += 1
        else:
            records.append(item)
    return records, skipped


def test_crackforest_counts_and_seg_matches_mat():
    records, skipped = _split(crackforest.iter_records(CF_ROOT))
    assert len(records) == 118 and skipped == {"no_annotation": 37}
    assert {r.anomaly_class for r in records} == {"crack"}
    assert {r.native_id for r in records} == {f"{i:03d}" for i in range(1, 119)}
    # The .seg run-length reading equals the independent .mat ground truth, pixel for pixel
    # (tolerance 0.5% of the crack pixels, measured: 0 differing pixels on all 118).
    for record in records[::10]:
        seg, mat = record.mask.decode(), crackforest.mat_mask(CF_ROOT, record.native_id)
        assert (seg != mat).sum() <= 0.005 * mat.sum()


def test_kolektorsdd_counts_and_polygon_area():
    records, skipped = _split(kolektorsdd.iter_records(KSDD_ROOT))
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
    [("crackforest", CF_ROOT, 118), ("kolektorsdd", KSDD_ROOT, 52), ("sd_saliency_900", SD_ROOT, 900)],
)
def test_committed_manifests_are_reproducible(tmp_path, origin, root, expected):
    manifest = tmp_path / f"{origin}.jsonl"
    report = ingest(get_loader(origin).iter_records(root), manifest)
    assert report.accepted == expected
    assert manifest.read_bytes() == (REPO / "manifests" / f"{origin}.jsonl").read_bytes()


def test_sd_saliency_classes():
    records, skipped = _split(get_loader("sd_saliency_900").iter_records(SD_ROOT))
    assert not skipped
    assert Counter(r.anomaly_class for r in records) == {"impurity": 300, "stain": 300, "scratch": 300}
    sample = records[0]
    truth = np.asarray(Image.open(SD_ROOT / "Ground truth" / f"{sample.native_id}.png").convert("L")) > 127
    assert np.array_equal(sample.mask.decode().astype(bool), truth)
