"""CAI on real data: KolektorSDD normals as targets, SD-saliency-900 + CrackForest as sources.

Every constraint of the paper's section 3.1 is checked row by row: STM scale types,
the 4:3:3 mix, ILS (centre in the foreground, pattern box inside the image), Poisson
injection kept inside the foreground, masks equal to the thresholded, median-filtered
grey difference; plus determinism, leakage refusal, reported retries and the CLI.
"""

from __future__ import annotations

import itertools
from collections import Counter

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA, copy_manifests, SOURCE_ROOTS
from daad.cli import app
from daad.errors import LeakageError
from daad.loaders.kolektorsdd import iter_normals
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.cai import (
    CAI,
    SCALE_BOUNDS,
    SCALE_TYPES,
    CAIConfig,
    PatternBank,
    crop_pattern,
    scale_quota,
    scale_rank,
)
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.injection import MASK_RULES, PATTERN_DILATE, inject_patch, select_location
from daad.synthesis.output import generator_info, read_generated, write_generated
from daad.synthesis.preview import LABEL_HEIGHT, PreviewSampler, contact_sheet
from daad.synthesis.base import Synthesis, Target
from daad.synthesis.targets import load_targets

KSDD = SHARED_DATA / "kolektorsdd-yolo"
ROOTS = Roots(SOURCE_ROOTS)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    return copy_manifests(tmp_path_factory.mktemp("m"), "sd_saliency_900", "crackforest", "kolektorsdd")


@pytest.fixture(scope="module")
def registry(manifests):
    return Registry(manifests, ROOTS)


@pytest.fixture(scope="module")
def view(registry):
    return registry.view(evaluation="kolektorsdd")


@pytest.fixture(scope="module")
def bank(view):
    return PatternBank.from_view(view)


@pytest.fixture(scope="module")
def targets():
    items = [(n.id, n.path) for n in itertools.islice(iter_normals(KSDD), 3)]
    return list(load_targets(items, 256, "CC-BY-NC-SA-4.0"))


def object_foreground(targets, method="classical"):
    """An extractor whose targets have an object-shaped foreground (as rembg gives for an object).

    KolektorSDD at 256 px is texture-like (the classical fallback returns all ones), so an
    ellipse off-centre stands in for the object, making "outside the foreground" non-empty.
    """
    fg = ForegroundExtractor(method)
    for i, target in enumerate(targets):
        mask = np.zeros(target.image.shape[:2], np.uint8)
        cv2.ellipse(mask, (120 + 5 * i, 136), (100, 118), 10 * i, 0, 360, 1, -1)
        fg.provide(target.id, mask)
    return fg


def fg_longest(fg):
    _, _, w, h = cv2.boundingRect(fg)
    return max(w, h)


def expected_mask(image, target):
    """Eq. 4 written out independently of the implementation."""
    diff = np.abs(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(int) - cv2.cvtColor(target, cv2.COLOR_RGB2GRAY))
    return cv2.medianBlur((diff > 7).astype(np.uint8), 7)


def test_scale_types_and_quota():
    assert scale_rank([0.05, 0.1, 0.29, 0.3, 0.69, 0.7, 3.0]).tolist() == [-1, 0, 0, 1, 1, 2, 2]
    assert scale_quota((4, 3, 3), 10).tolist() == [3, 3, 4]  # small, medium, large
    assert scale_quota((4, 3, 3), 20).tolist() == [6, 6, 8]
    assert scale_quota((2, 2, 6), 10).tolist() == [6, 2, 2]
    assert scale_quota((4, 3, 3), 1).tolist() == [0, 0, 1]


def test_the_view_is_leak_free_and_patterns_are_crops_to_the_mask(bank):
    ids = [p.id for p in bank.patterns]
    assert len(ids) == 895 + 118 and not any(i.startswith("kolektorsdd/") for i in ids)
    for pattern in bank.patterns[::97]:
        assert pattern.image.shape[:2] == pattern.mask.shape
        m = pattern.mask
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()


@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_every_row_respects_stm_mas_ils_pe_and_mask(targets, bank, view, mode):
    fg = object_foreground(targets)
    gen = CAI(CAIConfig(mode=mode, per_target=10, mask_rule="paper"), fg)  # the paper's Eq. 4, checked exactly
    rows = list(gen.generate_from_bank(targets, bank, seed=11))
    assert gen.name == f"cai-{mode}" and len(rows) == 30
    assert gen.report.gave_up == 0 and gen.report.quota_shifted == 0
    by_id = {p.id: p for p in bank.patterns}
    classes = {r.id: r.anomaly_class for r in view}
    for target in targets:
        mine = [r for r in rows if r.target_id == target.id]
        # 4:3:3 over the 10 outputs
        assert Counter(r.details["scale_type"] for r in mine) == {"large": 4, "medium": 3, "small": 3}
        foreground = fg(target.id, target.image)
        longest = fg_longest(foreground)
        assert 0 < foreground.sum() < foreground.size  # an object, not the whole image
        for row in mine:
            d = row.details
            pattern = by_id[row.source_ids[0]]
            assert row.anomaly_class == classes[pattern.id] and d["mode"] == mode
            # STM: original STR; never synthesised at a larger scale type; STR drawn in the type's range
            assert d["str"] == pytest.approx(pattern.longest / longest, abs=1e-5)
            rank = SCALE_TYPES.index(d["scale_type"])
            assert scale_rank(d["str"]) >= rank >= 0
            low, high = SCALE_BOUNDS[rank]
            assert low <= d["synthesis_str"] <= high
            w, h = d["size"]
            assert abs(max(w, h) - d["synthesis_str"] * longest) <= 2
            # ILS: centre in the foreground, whole pattern box inside the image
            cx, cy = d["location"]
            assert foreground[cy, cx] == 1
            assert 0 <= cx - w // 2 and cx - w // 2 + w <= 256 and 0 <= cy - h // 2 and cy - h // 2 + h <= 256
            # PE: nothing changes outside the foreground
            assert np.array_equal(row.image[foreground == 0], target.image[foreground == 0])
            # mask: binary, non-empty, the thresholded + median-filtered grey difference, near the pattern
            assert row.mask.dtype == np.uint8 and set(np.unique(row.mask)) == {0, 1}
            assert row.mask.sum() >= 10
            assert np.array_equal(row.mask, expected_mask(row.image, target.image))
            ys, xs = np.nonzero(row.mask)
            margin = 8
            assert xs.min() >= cx - w // 2 - margin and xs.max() < cx - w // 2 + w + margin
            assert ys.min() >= cy - h // 2 - margin and ys.max() < cy - h // 2 + h + margin


def test_mas_prefers_the_largest_scale_a_pattern_may_fill(targets, bank):
    fg = object_foreground(targets)
    target = targets[0]
    ranks = scale_rank(bank.longest / fg_longest(fg(target.id, target.image)))

    only_large = PatternBank([p for p, r in zip(bank.patterns, ranks) if r == 2])
    rows = list(CAI(CAIConfig(per_target=10), fg).synthesise(target, only_large, np.random.default_rng(0)))
    assert [r.details["scale_type"] for r in rows] == ["large"] * 4 + ["medium"] * 3 + ["small"] * 3

    only_small = PatternBank([p for p, r in zip(bank.patterns, ranks) if r == 0])
    gen = CAI(CAIConfig(per_target=10), fg)
    rows = list(gen.synthesise(target, only_small, np.random.default_rng(0)))
    assert [r.details["scale_type"] for r in rows] == ["small"] * 10
    assert gen.report.quota_shifted == 7 and any("smaller scale" in line for line in gen.failures)

    rows = list(CAI(CAIConfig(per_target=10, ratios=(2, 2, 6)), fg).synthesise(target, bank, np.random.default_rng(0)))
    assert Counter(r.details["scale_type"] for r in rows) == {"large": 2, "medium": 2, "small": 6}


def test_trivial_patterns_are_never_used(targets, bank):
    fg = object_foreground(targets)
    target = targets[0]
    longest = fg_longest(fg(target.id, target.image))
    trivial = [p for p in bank.patterns if p.longest / longest < 0.1]
    assert trivial  # SD-saliency-900 has tiny inclusions
    usable = [p for p in bank.patterns if p.longest / longest >= 0.7][:3]
    gen = CAI(CAIConfig(per_target=10, max_tries=100), fg)
    rows = list(gen.synthesise(target, PatternBank(trivial + usable), np.random.default_rng(1)))
    assert rows and len(rows) + gen.report.gave_up == 10
    assert {r.source_ids[0] for r in rows} <= {p.id for p in usable}


def test_location_selection_uses_only_legal_centres():
    fg = np.zeros((64, 64), np.uint8)
    fg[30, 40] = 1
    fg[0:3, :] = 1  # foreground where a 20x10 box cannot be centred
    rng = np.random.default_rng(0)
    assert {select_location(fg, (20, 10), 2, rng) for _ in range(20)} == {(40, 30)}
    fg[30, 40] = 0
    assert select_location(fg, (20, 10), 2, rng) is None


def test_same_seed_same_bytes_different_seed_different(targets, bank, tmp_path):
    def run(seed, out):
        gen = CAI(CAIConfig(mode="mixed", per_target=4), object_foreground(targets))
        write_generated(out, gen.generate_from_bank(targets[:2], bank, seed), generator=gen.name,
                        params=gen.params(), seed=seed, evaluation="kolektorsdd", progress=False)
        return b"".join(p.read_bytes() for p in sorted((out / "data").glob("*.parquet")))

    first, second, other = run(5, tmp_path / "a"), run(5, tmp_path / "b"), run(6, tmp_path / "c")
    assert first == second and first != other


def test_cai_refuses_anything_but_a_registry_view(targets, registry, bank):
    gen = CAI(CAIConfig(per_target=1), ForegroundExtractor("full"))
    for not_a_view in (None, registry, list(bank.patterns), [object()]):
        with pytest.raises(LeakageError, match="leak-free view"):
            list(gen.generate(targets[:1], not_a_view, seed=0))


def test_a_view_for_an_evaluation_dataset_never_yields_its_records(registry, targets):
    for evaluation in ("kolektorsdd", "crackforest"):
        view = registry.view(evaluation=evaluation, classes=["crack"])
        assert {r.origin for r in view} == {"crackforest", "kolektorsdd"} - {evaluation}
        gen = CAI(CAIConfig(per_target=5, max_tries=100), ForegroundExtractor("full"))
        rows = list(gen.generate(targets[:1], view, seed=0))
        assert len(rows) == 5 and all(r.anomaly_class == "crack" for r in rows)
        assert not any(r.source_ids[0].startswith(f"{evaluation}/") for r in rows)


def test_texture_targets_use_the_whole_image_and_failures_are_reported(targets, bank):
    fg = ForegroundExtractor("classical")  # KolektorSDD is a texture to the classical fallback
    rows = list(CAI(CAIConfig(per_target=10), fg).synthesise(targets[0], bank, np.random.default_rng(3)))
    assert len(rows) == 10 and fg(targets[0].id, targets[0].image).all()

    hopeless = CAI(CAIConfig(per_target=3, min_mask_px=256 * 256 + 1, max_tries=4), fg)
    assert list(hopeless.synthesise(targets[0], bank, np.random.default_rng(3))) == []
    assert hopeless.report.gave_up == 3 and sum(hopeless.report.failures.values()) == 12
    assert hopeless.report.failures["tiny_mask"] > 0
    assert any("given up" in line for line in hopeless.failures)


def test_crop_pattern_of_a_real_sd_saliency_anomaly():
    root = SHARED_DATA / "sd-saliency-900"
    image = cv2.cvtColor(cv2.imread(str(root / "Source Images" / "Sc_1.bmp")), cv2.COLOR_BGR2RGB)
    mask = (cv2.imread(str(root / "Ground truth" / "Sc_1.png"), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    pattern = crop_pattern("sd/Sc_1", image, mask, "scratch")
    x, y, w, h = cv2.boundingRect(mask)
    assert pattern.mask.shape == (h, w) and pattern.mask.sum() == mask.sum()
    assert np.array_equal(pattern.image, image[y : y + h, x : x + w])
    assert crop_pattern("empty", image, np.zeros_like(mask)) is None


def test_thin_cracks_survive_seamless_clone_erosion(bank, targets):
    """seamlessClone erodes its mask by 3 px; the dilated mask keeps a thin crack visible."""
    from daad.synthesis.cai import resize_pattern
    from daad.synthesis.injection import clone_patch

    crack = next(p for p in bank.patterns if p.id == "crackforest/001")  # a 1-3 px wide crack
    patch, mask = resize_pattern(crack, 200, 3)
    for mode in ("normal", "mixed"):
        out = clone_patch(targets[0].image, patch, mask, (128, 128), mode)
        assert (expected_mask(out, targets[0].image) > 0).sum() > 100
    eroded = clone_patch(targets[0].image, patch, mask, (128, 128), "normal", dilate_kernel=5)
    assert (expected_mask(eroded, targets[0].image) > 0).sum() < 10  # what a 2 px dilation leaves


def _cli_args(manifests):
    return ["--manifests", str(manifests), "--root", f"sd_saliency_900={SHARED_DATA / 'sd-saliency-900'}",
            "--root", f"crackforest={SHARED_DATA / 'crackforest'}", "--root", f"kolektorsdd={KSDD}", "-q"]


def target_folder(tmp_path, n=2):
    folder = tmp_path / "targets"
    folder.mkdir()
    for normal in itertools.islice(iter_normals(KSDD), n):
        (folder / normal.path.name).write_bytes(normal.path.read_bytes())
    return folder


def test_cli_writes_both_modes_and_a_preview(manifests, tmp_path):
    out, sheet = tmp_path / "out", tmp_path / "sheet.png"
    result = CliRunner().invoke(app, [
        "synth", "cai", "--targets", str(target_folder(tmp_path)), "--eval", "kolektorsdd", "--per-target", "3",
        "--mode", "both", "--classes", "crack,scratch", "--out", str(out), "--seed", "4", "--preview", str(sheet),
        *_cli_args(manifests),
    ])
    assert result.exit_code == 0, result.output
    for mode in ("normal", "mixed"):
        rows = list(read_generated(out / f"cai-{mode}"))
        assert len(rows) == 6 and {r["generator"] for r in rows} == {f"cai-{mode}"}
        assert all(r["anomaly_class"] in ("crack", "scratch") and r["seed"] == 4 for r in rows)
        assert all(not r["source_ids"][0].startswith("kolektorsdd/") for r in rows)
        assert set(rows[0]["details"]) >= {"scale_type", "str", "synthesis_str", "location", "mode", "retries"}
        assert all(r["mask"].any() for r in rows)
        info = generator_info(out / f"cai-{mode}")
        assert info["evaluation"] == "kolektorsdd" and info["params"]["mode"] == mode
        preview = cv2.imread(str(tmp_path / f"sheet-cai-{mode}.png"))
        assert preview is not None and preview.shape == (6 * (160 + LABEL_HEIGHT), 3 * 160, 3)  # every row, labelled


def test_cli_refuses_an_unknown_evaluation_dataset(manifests, tmp_path):
    result = CliRunner().invoke(app, ["synth", "cai", "--targets", str(target_folder(tmp_path, 1)), "--eval", "nope",
                                      "--out", str(tmp_path / "o"), *_cli_args(manifests)])
    assert result.exit_code != 0 and "nope" in str(result.exception or result.output)


def test_pattern_mask_rule_marks_thin_injected_lines_that_the_paper_rule_erases():
    """A 2 px line injected into a textured target: the paper's Eq. 4 mask (7 x 7 median)
    loses most of it; the pattern rule marks all of it and nothing off the placed pattern."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.normal(140, 12, (128, 128)).astype(np.float32), (0, 0), 2)
    target = np.repeat(texture.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    patch, line = np.full((40, 40, 3), 140, np.uint8), np.zeros((40, 40), np.uint8)
    cv2.line(line, (4, 6), (35, 33), 1, 2)
    patch[line > 0] = 40
    placed = np.zeros((128, 128), np.uint8)
    placed[44:84, 44:84] = line
    near_pattern = cv2.dilate(placed, np.ones((2 * PATTERN_DILATE + 1,) * 2, np.uint8))
    masks = {}
    for rule in MASK_RULES:
        result, masks[rule] = inject_patch(target, np.ones((128, 128), np.uint8), patch, line, (64, 64), "normal",
                                           threshold=7, median=7, mask_rule=rule)
    assert (masks["pattern"] & placed).sum() >= 0.95 * line.sum()
    assert not (masks["pattern"] & (near_pattern == 0)).any()
    assert (masks["paper"] & placed).sum() < 0.6 * line.sum()
    with pytest.raises(ValueError, match="mask rule"):
        CAIConfig(mask_rule="blob")


def test_preview_samples_across_targets_and_classes_and_keeps_aspect(tmp_path):
    """200 rows of 20 targets, one class appearing only at the very end: the sheet's 12 rows
    come from 12 targets spread over the output, plus that class; a tall target stays tall."""
    image, mask = np.full((120, 40, 3), 200, np.uint8), np.zeros((120, 40), np.uint8)
    mask[50:70, 10:30] = 1
    rows = [Synthesis(image, mask, "crack" if i < 199 else "hole", f"t{i // 10}", ("src/1",), {}) for i in range(200)]
    sampler = PreviewSampler(12, len(rows))
    for row in rows:
        sampler.offer(row)
    assert len({r.target_id for r in sampler.kept}) == 12 and sampler.kept[-1].anomaly_class == "hole"
    assert sampler.kept[0].target_id == "t0" and sampler.kept[-1].target_id == "t19"
    sheet = cv2.imread(str(contact_sheet(sampler.kept[:1], {"t0": Target("t0", image, "x")}, tmp_path / "s.png")))
    assert sheet.shape == (160 + LABEL_HEIGHT, 3 * 160, 3)
    tile = sheet[LABEL_HEIGHT:, :160]
    columns = np.flatnonzero((tile != 128).any(axis=(0, 2)))
    assert 50 <= columns.size <= 56  # 40 x 120 fitted into 160: about 53 px wide, not stretched
    assert (sheet[:LABEL_HEIGHT] < 128).any()  # the label is written
