"""Every published dataset with normal images is an evaluation set, read by its real loader from a fake
tree of the exact published layout (tests/helpers/fake_datasets.py); plus anomalib's Folder layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from daad.cli import app
from daad.evaluation.data import EvaluationDataError, anomalib_folder_set
from daad.evaluation.sets import LOADER_SETS, evaluation_sets, index, load_evaluation_set, normal_split
from helpers import fake_datasets

# dataset -> {category: (train normals, test anomalies, test normals)}, skipped by reason
EXPECTED = {
    "mvtec_ad": ({"bottle": (2, 3, 1), "cable": (2, 2, 1), "transistor": (2, 1, 1)}, {}),
    "mpdd": ({"bracket_black": (1, 3, 1), "connector": (1, 1, 1)}, {}),
    "btad": ({"01": (1, 2, 1), "02": (1, 2, 1), "03": (1, 2, 1)}, {"no_annotation": 1}),
    "mvtec_loco": ({"breakfast_box": (1, 4, 1), "pushpins": (1, 4, 1)}, {"other_split": 2}),  # validation/good
    "visa": ({"candle": (2, 3, 1), "pcb1": (2, 3, 1), "pcb4": (2, 1, 1)}, {}),
    "ksdd2": ({"": (3, 1, 2)}, {"other_split": 2}),  # the two defective train/ images
    "dagm2007": ({"Class1": (2, 1, 2), "Class2": (2, 1, 2)}, {"other_split": 2}),  # the Train defects
    "mtd": ({"": (2, 6, 1)}, {"no_annotation": 1, "empty_mask": 1}),  # seeded: 2 of 3 MT_Free train
    "bsdata": ({"": (2, 2, 1)}, {}),
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    out = {}
    for name in EXPECTED:
        root = tmp_path_factory.mktemp(name)
        getattr(fake_datasets, f"write_{name}")(root)
        out[name] = root
    return out


def test_every_loader_set_is_tested():
    assert set(LOADER_SETS) == set(EXPECTED) | {"kolektorsdd"}  # kolektorsdd: tests/test_evaluation.py


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_layout_becomes_per_category_sets(trees, name):
    categories, skipped = EXPECTED[name]
    ix = index(name, trees[name])
    assert ix.categories() == sorted(categories) and ix.skipped == skipped
    sets = list(evaluation_sets(name, trees[name]))
    assert [s.name for s in sets] == [f"{name}/{c}" if c else name for c in sorted(categories)]
    train_ids, _ = normal_split(name, trees[name])
    for s, category in zip(sets, sorted(categories)):
        n_train, n_anomalies, n_normals = categories[category]
        assert (len(s.train_normals), len(s.test_anomalies), len(s.test) - len(s.test_anomalies)) == categories[category]
        assert not {x.id for x in s.train_normals} & {x.id for x in s.test}  # no test image trains
        assert {x.id for x in s.train_normals} <= train_ids  # what `daad synth --target-split train` takes
        assert all(x.defect for x in s.test_anomalies) and not any(x.defect for x in s.test if not x.mask.any())
        assert all(x.mask.shape == x.image.shape[:2] and set(np.unique(x.mask)) <= {0, 1} for x in s.test)


def test_official_splits_come_from_the_release(trees):
    """MVTec: train/good trains and test/good scores; VisA: 1cls.csv; KSDD2 and DAGM: the split folders."""
    bottle = load_evaluation_set("mvtec_ad", trees["mvtec_ad"], "bottle")
    assert {x.id for x in bottle.train_normals} == {"mvtec_ad/bottle/train/000", "mvtec_ad/bottle/train/001"}
    assert {x.defect for x in bottle.test_anomalies} == {"broken_large", "contamination"}
    ksdd2 = load_evaluation_set("ksdd2", trees["ksdd2"])
    assert all(x.id.startswith("ksdd2/train/") for x in ksdd2.train_normals)
    assert all(x.id.startswith("ksdd2/test/") for x in ksdd2.test)
    dagm = load_evaluation_set("dagm2007", trees["dagm2007"], "Class1")
    assert all("/Train/" in x.id for x in dagm.train_normals) and all("/Test/" in x.id for x in dagm.test)
    assert dagm.test[0].image.ndim == 2  # a grey release stays one channel in memory


def test_visa_image_with_several_defects_is_one_sample_with_their_union(trees):
    """The loader splits a candle image's mask into one record per defect; scoring needs the image once,
    with every defect's pixels positive."""
    candle = load_evaluation_set("visa", trees["visa"], "candle")
    two = [x for x in candle.test_anomalies if "," in x.defect]
    assert len(two) == 1 and two[0].id == "visa/candle/001"
    assert two[0].defect == "chunk of wax missing,foreign particals on candle"
    values = np.asarray(Image.open(trees["visa"] / "candle/Data/Masks/Anomaly/001.png"))
    assert np.array_equal(two[0].mask, (values > 0).astype(np.uint8)) and len(np.unique(values)) == 3


def test_unknown_names_are_refused_with_what_exists(trees):
    with pytest.raises(EvaluationDataError, match="its categories: bottle, cable, transistor"):
        list(evaluation_sets("mvtec_ad", trees["mvtec_ad"], ["nope"]))
    with pytest.raises(EvaluationDataError, match="mvtec_ad has 3 categories; name one"):
        load_evaluation_set("mvtec_ad", trees["mvtec_ad"])
    with pytest.raises(EvaluationDataError, match="unknown evaluation dataset 'nope'"):
        load_evaluation_set("nope", trees["mvtec_ad"])
    with pytest.raises(EvaluationDataError, match="0 training normals and 0 test anomalies"):
        index("mvtec_ad", trees["visa"])


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_anomalib_folder_layout(tmp_path):
    """normal/, abnormal/ (flat and one sub-folder per type), mask/ with the same stems; normal_test/ optional."""
    rng = np.random.default_rng(0)
    for i in range(5):
        _png(tmp_path / "normal" / f"n{i}.png", rng.integers(0, 255, (24, 40, 3), np.uint8))
    for path in ("abnormal/a0.png", "abnormal/scratch/s0.png", "abnormal/scratch/s1.png"):
        _png(tmp_path / path, rng.integers(0, 255, (24, 40, 3), np.uint8))
        mask = np.zeros((24, 40), np.uint8)
        mask[5:10, 5:20] = 255
        _png(tmp_path / path.replace("abnormal", "mask"), mask)
    ev = anomalib_folder_set(tmp_path)
    assert (len(ev.train_normals), len(ev.test_anomalies), len(ev.test)) == (4, 3, 4)  # seeded 80 % of 5 train
    assert sorted(x.defect for x in ev.test_anomalies) == ["abnormal", "scratch", "scratch"]
    assert all(x.mask.sum() == 75 for x in ev.test_anomalies)
    _png(tmp_path / "normal_test" / "t0.png", rng.integers(0, 255, (24, 40, 3), np.uint8))
    ev = anomalib_folder_set(tmp_path)
    assert len(ev.train_normals) == 5 and [x.id for x in ev.test if not x.defect] == [f"{tmp_path.name}/normal_test/t0.png"]
    (tmp_path / "mask/scratch/s1.png").unlink()
    with pytest.raises(EvaluationDataError, match="abnormal/scratch/s1.png: no mask"):
        anomalib_folder_set(tmp_path)
    with pytest.raises(EvaluationDataError, match="no normal/, abnormal/, mask/"):
        anomalib_folder_set(tmp_path / "normal")


def test_daad_eval_per_category_with_the_dataset_mean(trees, tmp_path):
    """`daad eval --eval mvtec_ad --category bottle --category cable`: one folder made from every
    category's training normals; each category trains on its own rows, reports per defect type, and
    summary.json holds each category and their mean."""
    from test_evaluation import write_blob_dataset

    bottle, cable = (load_evaluation_set("mvtec_ad", trees["mvtec_ad"], c) for c in ("bottle", "cable"))
    gen = write_blob_dataset(tmp_path / "gen", bottle.train_normals + cable.train_normals, 2, seed=1, name="blobs")
    result = CliRunner().invoke(app, [
        "eval", "--eval", "mvtec_ad", "--root", f"mvtec_ad={trees['mvtec_ad']}", "--category", "bottle", "--category", "cable",
        "--generated", str(gen), "--size", "32", "--steps", "2", "--eval-every", "2", "--batch-size", "2",
        "--width", "4", "--device", "cpu", "--selection", "test-best", "--out", str(tmp_path / "r"), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    reports = {c: json.loads((tmp_path / "r" / c / "report.json").read_text()) for c in ("bottle", "cable")}
    assert reports["bottle"]["evaluation"]["dataset"] == "mvtec_ad/bottle" and reports["bottle"]["evaluation"]["test_anomalies"] == 3
    assert [r["rows"] for c in ("bottle", "cable") for r in reports[c]["results"]] == [4, 4]  # its own targets' rows
    assert set(reports["bottle"]["results"][0]["per_defect"]) == {"broken_large", "contamination"}
    assert "Per defect type" in (tmp_path / "r" / "bottle" / "report.md").read_text()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    per = summary["per_category"]["blobs"]
    for metric in ("pixel_auroc", "pixel_ap", "pro"):
        assert summary["mean"]["blobs"][metric] == pytest.approx((per["mvtec_ad/bottle"][metric] + per["mvtec_ad/cable"][metric]) / 2)
    assert "| **blobs** | **mean** |" in (tmp_path / "r" / "summary.md").read_text()


def test_evaluate_returns_maps_and_per_defect_metrics(trees, tmp_path):
    from test_evaluation import write_blob_dataset

    from daad.evaluation.harness import evaluate_generated
    from daad.evaluation.metrics import evaluate_maps
    from daad.evaluation.train import TrainConfig

    bottle = load_evaluation_set("mvtec_ad", trees["mvtec_ad"], "bottle")
    gen = write_blob_dataset(tmp_path / "gen", bottle.train_normals, 2, seed=1, name="blobs")
    config = TrainConfig(size=32, steps=2, eval_every=2, batch_size=2, base_width=4, device="cpu", progress=False, selection="test-best")
    (result,) = evaluate_generated(bottle, [gen], config, overlays=2)
    assert [m.shape for m in result.maps] == [s.mask.shape for s in bottle.test]
    assert evaluate_maps(result.maps, [s.mask for s in bottle.test]).as_dict() == result.metrics.as_dict()
    chosen = [i for i, s in enumerate(bottle.test) if s.defect in ("contamination", "")]
    expected = evaluate_maps([result.maps[i] for i in chosen], [bottle.test[i].mask for i in chosen]).pixel_ap
    assert result.per_defect["contamination"]["pixel_ap"] == expected
    assert sorted(s.defect for s, _ in result.examples) == ["broken_large", "contamination"]  # across types
    assert evaluate_generated(bottle, [gen], config, keep_maps=False)[0].maps is None


def test_overlay_has_a_caption_and_a_colour_bar(trees):
    from daad.evaluation.report import CAPTION_HEIGHT, COLOUR_BAR_WIDTH, OVERLAY_HEIGHT, overlay_strip

    sample = load_evaluation_set("dagm2007", trees["dagm2007"], "Class1").test_anomalies[0]  # a grey image
    amap = np.zeros(sample.mask.shape, np.float32)
    amap[sample.mask > 0] = 0.8
    strip = overlay_strip(sample, amap)
    assert strip.shape == (CAPTION_HEIGHT + OVERLAY_HEIGHT, 3 * OVERLAY_HEIGHT + 3 * 4 + COLOUR_BAR_WIDTH, 3)
    assert (strip[:CAPTION_HEIGHT] < 128).any()  # the caption's text
    bar = strip[CAPTION_HEIGHT:, -COLOUR_BAR_WIDTH:]
    top, bottom = bar[0, 0].astype(int), bar[-1, 0].astype(int)
    assert top[0] > top[2] and bottom[2] > bottom[0]  # 1 is red at the top, 0 blue at the bottom


def test_a_grey_dataset_trains_from_one_channel(trees):
    """DAGM's grey images stay one channel in the stacked training set; batches are expanded to the UNet's three."""
    import torch

    from daad.evaluation.train import TrainConfig, full_resolution_maps, stack, train_detector

    ev = load_evaluation_set("dagm2007", trees["dagm2007"], "Class1")
    images, masks = stack(ev.train_normals + ev.test, 32)
    assert images.shape == (5, 1, 32, 32) and images.dtype == torch.uint8 and masks.sum() > 0
    config = TrainConfig(size=32, steps=2, eval_every=2, batch_size=2, base_width=4, device="cpu", progress=False,
                         selection="test-best", precision="fp32")
    trained = train_detector(ev.train_normals, ev.test_anomalies, ev.test, config)
    assert [m.shape for m in full_resolution_maps(trained.model, ev.test, config)] == [(32, 32)] * 3
