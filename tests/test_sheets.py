"""Pictures of real anomalies: the sample grid a build embeds in its card (same build, same
bytes) and ``daad stats --contact-sheet`` (one sheet per class, spread across origins)."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np

from conftest import REPO, SD_ROOT, SOURCE_ROOTS, copy_manifests
from daad.dataset.build import build
from daad.dataset.sheets import CELL, SAMPLES_PATH, SAMPLES_PER_CLASS, SHEET_COLUMNS, spread
from daad.registry.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.preview import LABEL_HEIGHT


def _red(image: np.ndarray) -> int:
    """Pixels drawn in the outline colour (cv2 reads BGR)."""
    return int(np.count_nonzero((image[..., 2] == 255) & (image[..., 1] == 0) & (image[..., 0] == 0)))


def test_spread_takes_turns_across_groups_and_spaces_within_each():
    assert spread({"a": 100, "b": 2, "c": 0}, 6) == {"a": [0, 33, 66, 99], "b": [0, 1]}
    assert spread({"a": 3}, 10) == {"a": [0, 1, 2]}
    assert spread({}, 4) == {}


def test_build_embeds_a_deterministic_sample_grid_the_card_shows(tmp_path):
    manifests = copy_manifests(tmp_path / "m", "sd_saliency_900", "crackforest")
    registry = Registry(manifests, Roots(SOURCE_ROOTS))
    build(registry, tmp_path / "a", progress=False, workers=1)
    build(registry, tmp_path / "b", progress=False, workers=2)
    grid = (tmp_path / "a" / SAMPLES_PATH).read_bytes()
    assert grid == (tmp_path / "b" / SAMPLES_PATH).read_bytes()
    assert f"]({SAMPLES_PATH})" in (tmp_path / "a" / "README.md").read_text()
    image = cv2.imdecode(np.frombuffer(grid, np.uint8), cv2.IMREAD_COLOR)
    classes = 4  # crack (CrackForest), stain, scratch, impurity (SD-saliency-900)
    assert image.shape == (classes * (2 * LABEL_HEIGHT + CELL), SAMPLES_PER_CLASS * CELL, 3)
    assert _red(image) > 1000  # masks are outlined


def test_stats_contact_sheet_draws_each_class_and_counts_what_it_cannot_read(tmp_path):
    manifests = copy_manifests(tmp_path / "m", "sd_saliency_900", "crackforest")
    out = tmp_path / "sheets"
    result = subprocess.run(
        [sys.executable, "-m", "daad", "stats", "--manifests", str(manifests), "--root", f"sd_saliency_900={SD_ROOT}",
         "--contact-sheet", str(out)],
        env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "not drawn (no root for crackforest): 118" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["crack.png", "impurity.png", "scratch.png", "stain.png"]
    full = cv2.imread(str(out / "stain.png"))
    rows = 48 // SHEET_COLUMNS
    assert full.shape == (LABEL_HEIGHT + rows * (CELL + LABEL_HEIGHT), SHEET_COLUMNS * CELL, 3)
    assert _red(full) > 1000
    empty = cv2.imread(str(out / "crack.png"))  # CrackForest has no root here: title and an empty line
    assert empty.shape == (LABEL_HEIGHT + CELL + LABEL_HEIGHT, SHEET_COLUMNS * CELL, 3) and _red(empty) == 0
