"""The evaluation harness end to end: a fake KolektorSDD tree read by the real loader, generated
datasets written by the real writer, a small detector trained, the report written; plus FID/KID maths."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from conftest import SD_ROOT, copy_manifests
from daad.cli import app
from daad.evaluation.data import (
    EvaluationDataError, Sample, load_generated, mvtec_layout_set, rows_made_from,
)
from daad.evaluation.sets import kolektorsdd_set
from daad.evaluation.fid import NOT_COMPUTED, authenticity, frechet_distance, kernel_inception_distance, polynomial_mmd2
from daad.evaluation.metrics import evaluate_maps
from daad.evaluation.train import TrainConfig, full_resolution_maps, train_detector
from daad.synthesis.base import Synthesis
from daad.synthesis import output
from daad.synthesis.output import read_generated, write_generated

H, W = 96, 64  # tall, like KolektorSDD's 1250 x 500


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """CPU tests share a small machine: one intra-op thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def normal_image(rng: np.random.Generator) -> np.ndarray:
    """A smooth grey texture."""
    base = cv2.GaussianBlur(rng.normal(150, 25, (H, W)).astype(np.float32), (0, 0), 3)
    return np.repeat(base.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def dark_blob(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The test's stand-in generator: a dark ellipse at a random place (image, 0/1 mask)."""
    mask = np.zeros(image.shape[:2], np.uint8)
    centre = (int(rng.integers(8, W - 8)), int(rng.integers(8, H - 8)))
    cv2.ellipse(mask, centre, (int(rng.integers(3, 8)), int(rng.integers(2, 6))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    out = image.copy()
    out[mask > 0] = (out[mask > 0] * 0.3).astype(np.uint8)
    return out, mask


def crack_polygon(rng: np.random.Generator) -> list[float]:
    """A thin slanted quadrilateral, normalised YOLO-seg coordinates."""
    x, y = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.7)
    pts = [(x, y), (x + 0.05, y), (x + 0.1, y + 0.2), (x + 0.05, y + 0.2)]
    return [c for p in pts for c in p]


@pytest.fixture(scope="module")
def fake_kolektorsdd(tmp_path_factory) -> Path:
    """KolektorSDD's YOLO-seg layout: 12 defect-free images (empty labels), 4 with a dark crack polygon."""
    root = tmp_path_factory.mktemp("ksdd")
    rng = np.random.default_rng(0)
    for i in range(16):
        split = "train" if i < 12 else "val"
        (root / "Datasets/images" / split).mkdir(parents=True, exist_ok=True)
        (root / "Datasets/labels" / split).mkdir(parents=True, exist_ok=True)
        image = normal_image(rng)
        label = ""
        if i % 4 == 3:
            poly = crack_polygon(rng)
            pts = (np.array(poly).reshape(-1, 2) * [W, H]).round().astype(np.int32)
            mask = np.zeros((H, W), np.uint8)
            cv2.fillPoly(mask, [pts], 1)
            image[mask > 0] = (image[mask > 0] * 0.3).astype(np.uint8)
            label = "0 " + " ".join(f"{c:.5f}" for c in poly)
        Image.fromarray(image).save(root / "Datasets/images" / split / f"{i:03d}.jpg", quality=95)
        (root / "Datasets/labels" / split / f"{i:03d}.txt").write_text(label)
    return root


def write_blob_dataset(out: Path, targets: list[Sample], per_target: int, seed: int, name: str) -> Path:
    rng = np.random.default_rng(seed)

    def rows():
        for t in targets:
            for _ in range(per_target):
                image, mask = dark_blob(t.image, rng)
                yield Synthesis(image, mask, "stain", t.id, (), {"kind": "dark_blob"})

    write_generated(out, rows(), generator=name, params={"per_target": per_target}, seed=seed, evaluation="kolektorsdd", progress=False)
    return out


def test_kolektorsdd_set_splits_normals_and_keeps_every_defect(fake_kolektorsdd):
    ev = kolektorsdd_set(fake_kolektorsdd)
    assert len(ev.test_anomalies) == 4
    assert len(ev.train_normals) == round(0.8 * 12) and len(ev.test) == 4 + 12 - len(ev.train_normals)
    assert not {s.id for s in ev.train_normals} & {s.id for s in ev.test}
    assert kolektorsdd_set(fake_kolektorsdd).train_normals[0].id == ev.train_normals[0].id  # fixed split
    assert all(s.mask.shape == s.image.shape[:2] == (H, W) for s in ev.test)


def test_detector_learns_the_training_distribution(fake_kolektorsdd, tmp_path):
    """Trained on dark blobs, the detector localises fresh dark blobs far better than chance."""
    ev = kolektorsdd_set(fake_kolektorsdd)
    gen = load_generated(write_blob_dataset(tmp_path / "blobs", ev.train_normals, 4, seed=1, name="blobs"))
    assert len(gen.samples) == 4 * len(ev.train_normals) and gen.name == "blobs"
    config = TrainConfig(size=64, steps=45, batch_size=8, lr=3e-3, seed=0, eval_every=15, base_width=8, device="cpu", progress=False)
    trained = train_detector(ev.train_normals, gen.samples, ev.test, config)
    assert [h["step"] for h in trained.history] == [15, 30, 45]
    best = max(trained.history, key=lambda h: h["selection_ap"])
    assert trained.best_step == best["step"] and trained.best_selection_ap == best["selection_ap"]
    rng = np.random.default_rng(99)
    fresh = [Sample(f"fresh/{i}", *dark_blob(normal_image(rng), rng)) for i in range(12)]
    metrics = evaluate_maps(full_resolution_maps(trained.model, fresh, config), [s.mask for s in fresh])
    assert metrics.pixel_auroc > 0.9, metrics
    assert metrics.pixel_ap > 0.5, metrics  # chance is the anomalous pixel fraction, about 0.02


def test_bf16_ap_is_within_seed_noise_of_fp32(fake_kolektorsdd, tmp_path):
    """bf16 autocast + channels_last localises fresh dark blobs as well as fp32: the AP gap between the
    two precisions (same seed) is no larger than the gap between two fp32 seeds (or 0.05)."""
    ev = kolektorsdd_set(fake_kolektorsdd)
    gen = load_generated(write_blob_dataset(tmp_path / "blobs", ev.train_normals, 4, seed=1, name="blobs"))
    rng = np.random.default_rng(99)
    fresh = [Sample(f"fresh/{i}", *dark_blob(normal_image(rng), rng)) for i in range(12)]

    def ap(precision: str, seed: int) -> float:
        config = TrainConfig(size=64, steps=45, batch_size=8, lr=3e-3, seed=seed, eval_every=15, base_width=8,
                             device="cpu", progress=False, precision=precision)
        trained = train_detector(ev.train_normals, gen.samples, ev.test, config)
        return evaluate_maps(full_resolution_maps(trained.model, fresh, config), [s.mask for s in fresh]).pixel_ap

    fp32, bf16, other_seed = ap("fp32", 0), ap("bf16", 0), ap("fp32", 1)
    assert fp32 > 0.5 and bf16 > 0.5, (fp32, bf16)
    assert abs(bf16 - fp32) <= max(0.05, 2 * abs(other_seed - fp32)), (fp32, bf16, other_seed)
    with pytest.raises(ValueError, match="precision must be one of bf16, fp32 or auto"):
        TrainConfig(precision="fp16")
    assert TrainConfig(device="cpu").precision in ("bf16", "fp32")  # auto resolves to what the CPU computes natively


def test_generated_rows_of_other_targets_are_left_undecoded(fake_kolektorsdd, tmp_path, monkeypatch):
    """One folder made for several categories serves each: only the asked targets' rows are decoded."""
    ev = kolektorsdd_set(fake_kolektorsdd)
    path = write_blob_dataset(tmp_path / "blobs", ev.train_normals[:3], 2, seed=3, name="blobs")
    wanted = {ev.train_normals[0].id}
    decoded = []
    real_decode = output.decode_generated
    monkeypatch.setattr(output, "decode_generated", lambda raw: decoded.append(raw["target_id"]) or real_decode(raw))
    gen = load_generated(path, wanted)
    assert len(gen.samples) == 2 and set(decoded) == wanted
    assert len(load_generated(path, {"no-such-target"}).samples) == 6  # no row made from it: the folder serves all


def test_training_is_reproducible_from_the_seed(fake_kolektorsdd, tmp_path):
    ev = kolektorsdd_set(fake_kolektorsdd)
    gen = load_generated(write_blob_dataset(tmp_path / "blobs", ev.train_normals[:4], 2, seed=3, name="blobs"))
    config = TrainConfig(size=32, steps=6, batch_size=4, seed=5, eval_every=3, base_width=4, device="cpu",
                         progress=False, selection="test-best")
    a = train_detector(ev.train_normals, gen.samples, ev.test, config)
    b = train_detector(ev.train_normals, gen.samples, ev.test, config)
    assert a.history == b.history
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(p, q)


def test_learning_curve_on_the_test_set_never_chooses_the_checkpoint(fake_kolektorsdd, tmp_path):
    ev = kolektorsdd_set(fake_kolektorsdd)
    gen = load_generated(write_blob_dataset(tmp_path / "blobs", ev.train_normals[:4], 2, seed=3, name="blobs"))
    base = dict(size=32, steps=6, batch_size=4, seed=5, eval_every=3, base_width=4, device="cpu", progress=False)
    plain = train_detector(ev.train_normals, gen.samples, ev.test, TrainConfig(**base))
    curved = train_detector(ev.train_normals, gen.samples, ev.test, TrainConfig(**base, test_curve=True))
    assert [h["selection_ap"] for h in curved.history] == [h["selection_ap"] for h in plain.history]
    assert curved.best_step == plain.best_step and all(0 <= h["test_ap"] <= 1 for h in curved.history)


def test_daad_eval_writes_the_report(fake_kolektorsdd, tmp_path):
    ev = kolektorsdd_set(fake_kolektorsdd)
    first = write_blob_dataset(tmp_path / "gen-a", ev.train_normals, 2, seed=1, name="blobs-a")
    second = write_blob_dataset(tmp_path / "gen-b", ev.train_normals, 1, seed=2, name="blobs-b")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, [
        "eval", "--eval", "kolektorsdd", "--root", f"kolektorsdd={fake_kolektorsdd}",
        "--generated", str(first), "--generated", str(second), "--size", "64", "--steps", "10",
        "--eval-every", "5", "--batch-size", "4", "--width", "4", "--selection", "test-best",
        "--device", "cpu", "--out", str(out), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["generator"] for r in report["results"]] == ["blobs-a", "blobs-b"]
    assert [r["rows"] for r in report["results"]] == [2 * len(ev.train_normals), len(ev.train_normals)]
    assert "optimistic" in report["selection"]
    for r in report["results"]:
        assert set(r["metrics"]) == {"pixel_auroc", "pixel_ap", "pro", "pixel_f1_max", "image_auroc"}
        assert all(0.0 <= v <= 1.0 for v in r["metrics"].values())
        assert r["authenticity"] == {"fid": NOT_COMPUTED, "kid": NOT_COMPUTED}
    table = (out / "report.md").read_text()
    assert "| blobs-a |" in table and "| blobs-b |" in table and "optimistic" in table
    overlays = sorted((out / "overlays").rglob("*.png"))
    assert len(overlays) == 2 * 4
    assert cv2.imread(str(overlays[0])).shape[0] == 256 + 18  # the strip under its caption (id, defect, score)
    assert (out / "curves.png").stat().st_size > 10_000


def test_targets_come_from_the_train_split_and_eval_refuses_rows_made_from_test_images(fake_kolektorsdd, tmp_path):
    """``--target-origin`` of an evaluation dataset takes its training normals only; a set
    generated from every normal (``--target-split all``) is refused by ``daad eval``, by row."""
    manifests = copy_manifests(tmp_path / "m", "sd_saliency_900")
    ev = kolektorsdd_set(fake_kolektorsdd)
    test_ids = {s.id for s in ev.test}
    outs = {}
    for split in ("train", "all"):
        outs[split] = tmp_path / f"cai-{split}"
        result = CliRunner().invoke(app, [
            "synth", "cai", "--target-origin", "kolektorsdd", "--target-split", split, "--eval", "kolektorsdd",
            "--per-target", "1", "--size", "64", "--workers", "1", "--out", str(outs[split]), "-q",
            "--manifests", str(manifests), "--root", f"kolektorsdd={fake_kolektorsdd}", "--root", f"sd_saliency_900={SD_ROOT}",
        ])
        assert result.exit_code == 0, result.output
    train_targets = {row["target_id"] for row in read_generated(outs["train"])}
    assert train_targets == {s.id for s in ev.train_normals}
    all_targets = {row["target_id"] for row in read_generated(outs["all"])}
    leaked = rows_made_from(outs["all"], test_ids)
    assert all_targets & test_ids and leaked and not rows_made_from(outs["train"], test_ids)
    result = CliRunner().invoke(app, [
        "eval", "--eval", "kolektorsdd", "--root", f"kolektorsdd={fake_kolektorsdd}", "--generated", str(outs["all"]),
        "--size", "32", "--steps", "2", "--eval-every", "2", "--batch-size", "2", "--width", "4", "--device", "cpu",
        "--out", str(tmp_path / "report"), "--quiet",
    ])
    assert isinstance(result.exception, EvaluationDataError), result.output
    assert f"{len(leaked)} rows were made from test images of kolektorsdd" in str(result.exception)
    assert not (tmp_path / "report" / "report.json").exists()


def test_eval_on_a_users_folder_in_mvtec_layout(tmp_path):
    """A user's own category folder (MVTec AD layout) is an evaluation dataset: its train/good
    trains, its test images score; rows made from its test images are refused; a folder
    that is not one category is named with the categories it holds."""
    rng = np.random.default_rng(4)
    category = tmp_path / "data" / "tiles"
    for folder, n in (("train/good", 8), ("test/good", 3), ("test/crack", 3)):
        (category / folder).mkdir(parents=True)
        for i in range(n):
            image = normal_image(rng)
            if folder == "test/crack":
                image, mask = dark_blob(image, rng)
                (category / "ground_truth/crack").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask * 255).save(category / "ground_truth/crack" / f"{i:03d}_mask.png")
            Image.fromarray(image).save(category / folder / f"{i:03d}.png")
    ev = mvtec_layout_set(category)
    assert (len(ev.train_normals), len(ev.test), len(ev.test_anomalies)) == (8, 6, 3)
    assert ev.test_anomalies[0].id == "tiles/test/crack/000.png" and ev.test_anomalies[0].mask.max() == 1
    good = write_blob_dataset(tmp_path / "gen", ev.train_normals, 2, seed=1, name="blobs")
    leaky = write_blob_dataset(tmp_path / "leaky", ev.test[:2], 1, seed=1, name="leaky")
    args = ["eval", "--eval", "mvtec-layout", "--root", f"mvtec-layout={category}", "--size", "32", "--steps", "4",
            "--eval-every", "2", "--batch-size", "4", "--width", "4", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, [*args, "--generated", str(good), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [r["rows"] for r in report["results"]] == [16]
    result = CliRunner().invoke(app, [*args, "--generated", str(leaky), "--out", str(tmp_path / "report2")])
    assert isinstance(result.exception, EvaluationDataError) and "2 rows were made from test images" in str(result.exception)
    with pytest.raises(EvaluationDataError, match="categories found in it: tiles"):
        mvtec_layout_set(tmp_path / "data")
    (category / "ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(EvaluationDataError, match="tiles/test/crack/001.png: its mask .* is missing"):
        mvtec_layout_set(category)


# --- Authenticity (FID / KID) -------------------------------------------------------------


class TinyRandomExtractor(nn.Module):
    """TEST ONLY: a tiny randomly initialised conv feature extractor, standing in for Inception
    to check the FID/KID computation. Its values mean nothing about image quality."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


def test_frechet_distance_matches_an_eigendecomposition():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (200, 5)), rng.normal(0.5, 2, (150, 5)) @ rng.normal(0, 1, (5, 5))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    root_a = v @ np.diag(np.sqrt(w)) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cb @ root_a), 0, None)).sum()  # Tr((A^1/2 B A^1/2)^1/2)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (7, 3)), rng.normal(1, 1, (7, 3))
    k = lambda x, y: (x @ y / 3 + 1) ** 3  # noqa: E731
    aa = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    bb = sum(k(b[i], b[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    ab = sum(k(x, y) for x in a for y in b) / (7 * 7)
    assert polynomial_mmd2(a, b) == pytest.approx(aa + bb - 2 * ab)
    # subsets as large as the sets are permutations of them: every subset gives the same MMD
    mean, std = kernel_inception_distance(a, b, np.random.default_rng(0), subsets=3, subset_size=100)
    assert mean == pytest.approx(aa + bb - 2 * ab) and std == pytest.approx(0, abs=1e-12)
    smaller, _ = kernel_inception_distance(a, b, np.random.default_rng(0), subsets=50, subset_size=4)
    assert smaller != pytest.approx(mean)  # genuinely random subsets of 4 rows


def test_authenticity_with_a_tiny_random_extractor():
    """Labelled: a random extractor proves the pipeline, not image quality."""
    rng = np.random.default_rng(2)
    real = [normal_image(rng) for _ in range(12)]
    same = [normal_image(rng) for _ in range(12)]
    dark = [(im * 0.4).astype(np.uint8) for im in same]
    extractor = TinyRandomExtractor()
    near, far = authenticity(extractor, same, real, size=64), authenticity(extractor, dark, real, size=64)
    assert 0 <= near["fid"] < far["fid"] and near["kid"] < far["kid"]
    assert authenticity(None, same, real) == {"fid": NOT_COMPUTED, "kid": NOT_COMPUTED}
