"""Each localisation metric against an independent computation: scikit-learn, brute force, hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from daad.evaluation.metrics import evaluate_maps


def random_case(seed: int, n: int = 4, shape=(24, 32), levels: int | None = None):
    """Maps loosely correlated with masks holding several regions; ``levels`` quantises scores (ties)."""
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(n):
        mask = np.zeros(shape, np.uint8)
        if i % 3 != 2:  # some images are normal
            for _ in range(rng.integers(1, 4)):
                y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
                mask[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = 1
        score = rng.random(shape) + 0.6 * mask
        if levels:
            score = np.floor(score * levels) / levels
        masks.append(mask)
        maps.append(score.astype(np.float32))
    return maps, masks


def brute_force_pro(maps, masks, limit=0.3):
    """PRO by definition: per distinct threshold, mean overlap over every region and FPR; explicit trapezoids."""
    regions, normal_scores = [], []
    for amap, mask in zip(maps, masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[labels == k] for k in range(1, count + 1)]
        normal_scores.append(amap[mask == 0])
    normal = np.concatenate(normal_scores)
    points = [(0.0, 0.0)]
    for t in sorted({float(v) for m in maps for v in m.ravel()}, reverse=True):
        fpr = float(np.mean(normal >= t))
        pro = float(np.mean([np.mean(r >= t) for r in regions]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


@pytest.mark.parametrize("seed,levels", [(0, None), (1, None), (2, 10), (3, 4)])
def test_pixel_metrics_match_sklearn(seed, levels):
    maps, masks = random_case(seed, levels=levels)
    result = evaluate_maps(maps, masks)
    scores = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([m.ravel() for m in masks])
    assert result.pixel_auroc == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    assert result.pixel_ap == pytest.approx(average_precision_score(truth, scores), abs=1e-12)
    precision, recall, _ = precision_recall_curve(truth, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0)
    assert result.pixel_f1_max == pytest.approx(f1.max(), abs=1e-12)


@pytest.mark.parametrize("seed,levels", [(0, None), (4, None), (5, 8), (6, 3)])
def test_pro_matches_brute_force(seed, levels):
    maps, masks = random_case(seed, n=5, levels=levels)
    assert evaluate_maps(maps, masks).pro == pytest.approx(brute_force_pro(maps, masks), abs=1e-12)


def test_image_auroc_is_auroc_of_map_maxima():
    maps, masks = random_case(7, n=9)
    labels = [m.any() for m in masks]
    assert evaluate_maps(maps, masks).image_auroc == pytest.approx(roc_auc_score(labels, [m.max() for m in maps]))


def test_perfect_map_scores_one_everywhere():
    _, masks = random_case(8, n=6)
    result = evaluate_maps([m.astype(np.float32) for m in masks], masks)
    assert (result.pixel_auroc, result.pixel_ap, result.pro, result.pixel_f1_max, result.image_auroc) == (1.0, 1.0, 1.0, 1.0, 1.0)


def test_constant_map_pro_is_the_diagonal():
    """One threshold: the curve jumps from (0, 0) to (1, 1); area to 0.3 is 0.045, normalised 0.15."""
    _, masks = random_case(9)
    result = evaluate_maps([np.zeros(m.shape, np.float32) for m in masks], masks)
    assert result.pro == pytest.approx(0.15)
    assert result.pixel_auroc == pytest.approx(0.5)


def test_pro_weighs_regions_not_pixels():
    """A 1-pixel region found without false positives, a 99-pixel region missed: PRO starts at 0.5, TPR at 0.01.

    Curve (0, 0) -> (0, 0.5) -> (1, 1): area to 0.3 is 0.3 * (0.5 + 0.65) / 2 = 0.1725, normalised 0.575.
    """
    mask = np.zeros((20, 20), np.uint8)
    mask[0, 0] = 1
    mask[5:14, 5:16] = 1  # 99 pixels, not touching the first region
    amap = np.zeros(mask.shape, np.float32)
    amap[0, 0] = 1.0
    result = evaluate_maps([amap], [mask])
    assert result.pro == pytest.approx(0.575)
    assert result.pixel_auroc == pytest.approx(0.5 + 0.5 * 0.01)


def test_diagonal_neighbours_are_one_region():
    """8-connectivity, as in the MVTec AD reference: two diagonal pixels form one region."""
    mask = np.zeros((6, 6), np.uint8)
    mask[1, 1] = mask[2, 2] = 1
    amap = np.zeros(mask.shape, np.float32)
    amap[1, 1] = 1.0  # half of the single region found at FPR 0
    assert evaluate_maps([amap], [mask]).pro == pytest.approx(brute_force_pro([amap], [mask]))
    assert evaluate_maps([amap], [mask]).pro == pytest.approx((0.3 * (0.5 + 0.5 + 0.5 * 0.3) / 2) / 0.3)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="map 0"):
        evaluate_maps([np.zeros((4, 4))], [np.zeros((4, 5))])
    with pytest.raises(ValueError, match="both anomalous and normal"):
        evaluate_maps([np.zeros((4, 4))], [np.zeros((4, 4))])
