"""The DST Poisson solver against ``cv2.seamlessClone`` on real patterns and targets, and
the clone-box-only injection against the same steps on the whole image."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA, SOURCE_ROOTS, copy_manifests
from daad.loaders.kolektorsdd import iter_normals
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.cai import PatternBank, resize_pattern
from daad.synthesis.injection import (
    CLONE_FLAGS,
    clone_margin,
    clone_patch,
    difference_mask,
    inject_patch,
    keep_inside,
    prepare_clone,
    select_location,
)
from daad.synthesis.poisson import seamless_clone
from daad.synthesis.targets import load_targets


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    manifests = copy_manifests(tmp_path_factory.mktemp("m"), "sd_saliency_900", "crackforest", "kolektorsdd")
    view = Registry(manifests, Roots(SOURCE_ROOTS)).view(evaluation="kolektorsdd")
    return PatternBank.from_view(view).patterns


@pytest.fixture(scope="module")
def targets():
    items = [(n.id, n.path) for n in itertools.islice(iter_normals(SHARED_DATA / "kolektorsdd-yolo"), 4)]
    return [t.image for t in load_targets(items, 256)]


def draws(patterns, targets, n, seed=0):
    """``n`` (target, source, clone mask, centre) draws: real patterns of random sizes at random legal places."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        pattern = patterns[rng.integers(len(patterns))]
        resized = resize_pattern(pattern, rng.uniform(12, 230), 3)
        if resized is None:
            continue
        src, mask, _ = prepare_clone(*resized, 5, 11)
        x, y, w, h = cv2.boundingRect(mask)
        target = targets[len(out) % len(targets)]
        centre = (int(rng.integers(w // 2, 256 - w + w // 2 + 1)), int(rng.integers(h // 2, 256 - h + h // 2 + 1)))
        out.append((target, src, mask, centre))
    return out


@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_dst_solver_matches_opencv_seamless_clone(patterns, targets, mode):
    differing = total = changed = 0
    for target, src, mask, centre in draws(patterns, targets, 60):
        # cv2.seamlessClone erodes the mask it is given in place: hand it a copy.
        expected = cv2.seamlessClone(src, target, mask.copy(), centre, CLONE_FLAGS[mode]).astype(int)
        actual = seamless_clone(src, target, mask, centre, mode)
        diff = np.abs(actual - expected)
        assert diff.max() <= 1, f"{mode} at {centre}: {diff.max()} grey levels apart"
        differing += int(np.count_nonzero(diff))
        total += diff.size
        changed += int(np.count_nonzero(np.abs(expected - target) > 7))
    assert differing / total < 0.01
    assert changed > 0.01 * total  # the clones do change the targets: the comparison is not vacuous


def test_solver_reproduces_the_target_when_the_source_is_the_target(targets):
    target = targets[0]
    mask = np.zeros((80, 60), np.uint8)
    mask[5:75, 5:55] = 255
    src = target[88:168, 98:158].copy()
    out = seamless_clone(src, target, mask, (128, 128), "normal")
    assert np.abs(out.astype(int) - target).max() <= 1
    assert np.array_equal(out[:88], target[:88])  # nothing outside the clone box changes


def test_solver_refuses_a_box_outside_the_image_and_unknown_modes(targets):
    src = np.full((40, 40, 3), 200, np.uint8)
    mask = np.full((40, 40), 255, np.uint8)
    with pytest.raises(ValueError, match="does not fit"):
        seamless_clone(src, targets[0], mask, (5, 128), "normal")
    with pytest.raises(ValueError, match="mode must be one of"):
        seamless_clone(src, targets[0], mask, (128, 128), "average")
    empty = seamless_clone(src, targets[0], np.zeros((40, 40), np.uint8), (128, 128), "normal")
    assert np.array_equal(empty, targets[0])


@pytest.mark.parametrize("solver", ["dst", "opencv"])
def test_injection_on_the_clone_box_equals_the_whole_image_steps(patterns, targets, solver):
    rng = np.random.default_rng(1)
    foreground = np.zeros((256, 256), np.uint8)
    cv2.ellipse(foreground, (128, 128), (110, 90), 20, 0, 360, 1, -1)
    checked = 0
    for pattern in patterns[::40]:
        resized = resize_pattern(pattern, rng.uniform(10, 200), 3)
        if resized is None:
            continue
        patch, mask = resized
        centre = select_location(np.ones_like(foreground), (patch.shape[1], patch.shape[0]), clone_margin(11), rng)
        if centre is None:
            continue
        target = targets[checked % len(targets)]
        for mode in ("normal", "mixed"):
            result, diff = inject_patch(
                target, foreground, patch, mask, centre, mode, threshold=7, median=7, solver=solver
            )
            whole = keep_inside(clone_patch(target, patch, mask, centre, mode, solver=solver), target, foreground)
            assert np.array_equal(result, whole)
            assert np.array_equal(diff, difference_mask(whole, target, 7, 7))
        checked += 1
    assert checked >= 10
