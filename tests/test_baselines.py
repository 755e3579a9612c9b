"""CutPaste, NSA and DRAEM-style baselines on real KolektorSDD normals (and registry textures)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA, copy_manifests, SOURCE_ROOTS
from daad.errors import LeakageError
from daad.loaders.kolektorsdd import iter_normals
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.baselines.cutpaste import CutPaste, CutPasteConfig
from daad.synthesis.baselines.draem import DRAEM, DRAEMConfig, draem_blend, folder_textures
from daad.synthesis.baselines.nsa import NSA, NSAConfig
from daad.synthesis.baselines.perlin import perlin_noise
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.injection import difference_mask
from daad.synthesis.output import read_generated, write_generated
from daad.synthesis.targets import load_targets

KSDD = SHARED_DATA / "kolektorsdd-yolo"
ROOTS = Roots(SOURCE_ROOTS)


@pytest.fixture(scope="module")
def targets():
    items = [(n.id, n.path) for n in itertools.islice(iter_normals(KSDD), 4)]
    return list(load_targets(items, 256, "CC-BY-NC-SA-4.0"))


@pytest.fixture
def registry(tmp_path):
    return Registry(copy_manifests(tmp_path / "m", "sd_saliency_900", "crackforest", "kolektorsdd"), ROOTS)


def _binary_nonempty(mask):
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


def test_cutpaste_pastes_a_rectangle_of_the_image_itself(targets):
    cfg = CutPasteConfig(per_target=5)
    rows = list(CutPaste(cfg).generate(targets[:2], None, seed=3))
    assert len(rows) == 10
    for row in rows:
        target = next(t for t in targets if t.id == row.target_id).image
        _binary_nonempty(row.mask)
        assert np.array_equal(row.image[row.mask == 0], target[row.mask == 0])
        x, y, w, h = cv2.boundingRect(row.mask)
        assert row.mask.sum() == w * h  # a full rectangle
        area = w * h / row.mask.size
        assert cfg.area_ratio[0] * 0.8 <= area <= cfg.area_ratio[1] * 1.2
        assert (row.image[row.mask == 1] != target[row.mask == 1]).any()


def test_cutpaste_scar_is_thin_rotated_and_deterministic(targets):
    gen = CutPaste(CutPasteConfig(scar=True, per_target=5))
    assert gen.name == "cutpaste-scar"
    rows = list(gen.generate(targets[:2], None, seed=5))
    again = list(gen.generate(targets[:2], None, seed=5))
    other = list(gen.generate(targets[:2], None, seed=6))
    for row, twin in zip(rows, again, strict=True):
        assert row.image.tobytes() == twin.image.tobytes() and row.mask.tobytes() == twin.mask.tobytes()
        target = next(t for t in targets if t.id == row.target_id).image
        _binary_nonempty(row.mask)
        assert np.array_equal(row.image[row.mask == 0], target[row.mask == 0])
        assert 2 * 10 * 0.5 <= row.mask.sum() <= 16 * 25 * 1.5
    assert any(a.mask.tobytes() != b.mask.tobytes() for a, b in zip(rows, other))


@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_nsa_blends_another_normal_image_inside_the_foreground(targets, mode):
    fg = ForegroundExtractor("classical")
    gen = NSA(NSAConfig(mode=mode, per_target=4), fg)
    rows = list(gen.generate(targets, None, seed=1))
    assert gen.name == f"nsa-{mode}" and len(rows) == 16 and gen.report.gave_up == 0
    for row in rows:
        target = next(t for t in targets if t.id == row.target_id).image
        foreground = fg(row.target_id, target)
        assert row.details["source_target"] != row.target_id
        cx, cy = row.details["location"]
        assert foreground[cy, cx] == 1
        assert np.array_equal(row.image[foreground == 0], target[foreground == 0])
        _binary_nonempty(row.mask)
        assert row.mask.sum() >= 10
        assert np.array_equal(row.mask, difference_mask(row.image, target, 7, 7))
    again = list(NSA(NSAConfig(mode=mode, per_target=4), ForegroundExtractor("classical")).generate(targets, None, 1))
    assert [r.image.tobytes() for r in rows] == [r.image.tobytes() for r in again]


def test_perlin_noise_is_smooth_bounded_and_seeded():
    a = perlin_noise((256, 200), (4, 8), np.random.default_rng(0))
    b = perlin_noise((256, 200), (4, 8), np.random.default_rng(0))
    assert a.shape == (256, 200) and np.array_equal(a, b)
    assert -1.5 < a.min() < 0 < a.max() < 1.5
    assert np.abs(np.diff(a, axis=0)).max() < 0.2  # smooth, not white noise


def test_draem_blends_registry_textures_and_never_leaks(targets, registry):
    view = registry.view(evaluation="sd_saliency_900")
    gen = DRAEM(DRAEMConfig(per_target=5))
    rows = list(gen.generate(targets[:2], view, seed=2))
    assert len(rows) == 10
    for row in rows:
        target = next(t for t in targets if t.id == row.target_id).image
        _binary_nonempty(row.mask)
        assert np.array_equal(row.image[row.mask == 0], target[row.mask == 0])
        assert row.source_ids == (row.details["texture"],)
        assert not row.source_ids[0].startswith("sd_saliency_900/")
        record = next(r for r in view if r.id == row.source_ids[0])
        texture = cv2.resize(view.read_image(record), (256, 256), interpolation=cv2.INTER_AREA)
        assert np.array_equal(row.image, draem_blend(target, texture, row.mask, row.details["beta"]))


def test_draem_refuses_anything_but_a_registry_view(targets):
    with pytest.raises(LeakageError, match="RegistryView"):
        list(DRAEM().generate(targets[:1], [], seed=0))


def test_draem_textures_from_a_folder(targets, tmp_path):
    for name in ("001.jpg", "002.jpg"):
        (tmp_path / "tex").mkdir(exist_ok=True)
        (tmp_path / "tex" / name).write_bytes((SHARED_DATA / "crackforest" / "image" / name).read_bytes())
    gen = DRAEM(DRAEMConfig(per_target=3), folder_textures(tmp_path / "tex"))
    rows = list(gen.generate(targets[:1], None, seed=0))
    assert len(rows) == 3 and all(r.source_ids == () for r in rows)
    assert {r.details["texture"] for r in rows} <= {"tex/001.jpg", "tex/002.jpg"}


def test_baseline_rows_write_the_shared_schema(targets, tmp_path):
    gen = CutPaste(CutPasteConfig(per_target=2))
    rows = list(gen.generate(targets[:2], None, seed=0))
    write_generated(tmp_path / "out", rows, generator=gen.name, params=gen.params(), seed=0,
                    evaluation="kolektorsdd", progress=False)
    back = list(read_generated(tmp_path / "out"))
    assert [r["generator"] for r in back] == ["cutpaste"] * 4
    assert all(np.array_equal(b["mask"], r.mask) and np.array_equal(b["image"], r.image) for b, r in zip(back, rows))


@pytest.mark.parametrize("args, folders", [
    (["cutpaste", "--variant", "both"], ["cutpaste", "cutpaste-scar"]),
    (["nsa", "--mode", "both"], ["nsa-normal", "nsa-mixed"]),
    (["draem"], [""]),
])
def test_baseline_cli_commands(tmp_path, args, folders):
    from typer.testing import CliRunner

    from daad.cli import app

    folder = tmp_path / "targets"
    folder.mkdir()
    for normal in itertools.islice(iter_normals(KSDD), 2):
        (folder / normal.path.name).write_bytes(normal.path.read_bytes())
    manifests = copy_manifests(tmp_path / "m", "sd_saliency_900", "crackforest", "kolektorsdd")
    roots = [f"--root=sd_saliency_900={SHARED_DATA / 'sd-saliency-900'}", f"--root=crackforest={SHARED_DATA / 'crackforest'}"]
    result = CliRunner().invoke(app, ["synth", *args, "--targets", str(folder), "--eval", "kolektorsdd",
                                      "--per-target", "2", "--out", str(tmp_path / "out"), "--manifests", str(manifests),
                                      *roots, "-q"])
    assert result.exit_code == 0, result.output
    for sub in folders:
        rows = list(read_generated(tmp_path / "out" / sub))
        assert len(rows) == 4 and all(r["mask"].any() for r in rows)
        assert all(r["anomaly_class"] is None for r in rows)
