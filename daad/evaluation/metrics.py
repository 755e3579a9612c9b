"""Localisation metrics on anomaly maps: pixel AUROC, pixel AP, PRO, pixel F1-max, image AUROC.

Every pixel-level metric comes from one descending sort of all pixel scores
(:func:`threshold_curve`): cumulative weights of positive and negative pixels at each
distinct threshold. With unit weights that is the ROC / precision-recall curve; with
each anomalous pixel weighted ``1 / (area of its region * number of regions)`` the
cumulative positive weight is the mean per-region overlap, so the PRO curve is exact
at every threshold, not sampled.

PRO follows the MVTec AD definition: regions are the 8-connected components of each
ground-truth mask; the curve PRO(FPR) is integrated (trapezoids, linearly interpolated
at the limit) from FPR 0 to ``fpr_limit`` (0.3) and divided by ``fpr_limit``, so a
perfect map scores 1 and the range is [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

PRO_FPR_LIMIT = 0.3
CURVE_POINTS = 1024
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True, slots=True)
class Curve:
    """A metric curve, ``x`` and ``y`` at (up to ``CURVE_POINTS``) distinct thresholds, for plots."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class LocalisationMetrics:
    pixel_auroc: float
    pixel_ap: float
    pro: float
    """Normalised area under PRO(FPR) for FPR in [0, 0.3]."""
    pixel_f1_max: float
    image_auroc: float
    """From the maximum of each map; NaN when the test set has a single class."""
    curves: dict[str, Curve] = field(default_factory=dict, repr=False)
    """``roc`` (FPR, TPR), ``pr`` (recall, precision), ``pro`` (FPR, PRO)."""

    def as_dict(self) -> dict[str, float]:
        return {
            "pixel_auroc": self.pixel_auroc,
            "pixel_ap": self.pixel_ap,
            "pro": self.pro,
            "pixel_f1_max": self.pixel_f1_max,
            "image_auroc": self.image_auroc,
        }


def threshold_curve(scores: np.ndarray, *weights: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cumulative sums of each per-pixel ``weights`` array over the pixels scoring >= each distinct threshold.

    Returns ``(thresholds, cumulative sums)``, thresholds descending; one sort for all.
    """
    order = np.argsort(scores)[::-1]  # ties are merged below, so an unstable sort is fine
    sorted_scores = scores[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    return sorted_scores[last_of_tie], [np.cumsum(w[order], dtype=np.float64)[last_of_tie] for w in weights]


def integrate_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under ``y(x)`` (``x`` ascending from 0) for ``x`` in [0, limit], interpolated at the limit."""
    inside = x <= limit
    xs, ys = x[inside], y[inside]
    if xs[-1] < limit and inside.sum() < x.size:
        nxt = int(inside.sum())
        y_limit = np.interp(limit, x[nxt - 1 : nxt + 1], y[nxt - 1 : nxt + 1])
        xs, ys = np.r_[xs, limit], np.r_[ys, y_limit]
    return float(np.trapezoid(ys, xs))


def region_weights(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel weight ``1 / (area of its region * regions in all masks)``; 0 off the regions."""
    labelled, sizes = [], []
    offset = 0
    for mask in masks:
        labels, count = ndimage.label(mask > 0, structure=EIGHT_CONNECTED)
        labelled.append(np.where(labels > 0, labels + offset, 0).ravel())
        sizes.append(np.bincount(labels.ravel(), minlength=count + 1)[1:])
        offset += count
    if offset == 0:
        raise ValueError("PRO needs at least one anomalous region in the ground truth")
    size_of = np.r_[np.inf, np.concatenate(sizes)].astype(np.float64)
    return 1.0 / (size_of[np.concatenate(labelled)] * offset)


def evaluate_maps(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = PRO_FPR_LIMIT) -> LocalisationMetrics:
    """All metrics of anomaly ``maps`` (higher = more anomalous) against binary ``masks`` of the same shapes."""
    if len(maps) != len(masks) or not maps:
        raise ValueError(f"need as many maps as masks (got {len(maps)} and {len(masks)})")
    for i, (m, g) in enumerate(zip(maps, masks)):
        if m.shape != g.shape:
            raise ValueError(f"map {i} is {m.shape}, its mask is {g.shape}")
    scores = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    truth = np.concatenate([(np.asarray(g) > 0).ravel() for g in masks])
    n_pos, n_neg = int(truth.sum()), int(truth.size - truth.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("pixel metrics need both anomalous and normal pixels")

    negative = (~truth).astype(np.float64)
    _, (tp, fp, overlap) = threshold_curve(scores, truth.astype(np.float64), negative, region_weights(masks))
    fpr, tpr = np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]
    auroc = float(np.trapezoid(tpr, fpr))
    precision, recall = tp / (tp + fp), tp / n_pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    f1 = 2 * precision * recall / np.maximum(precision + recall, np.finfo(np.float64).tiny)
    pro_fpr, pro_y = fpr, np.r_[0.0, overlap]
    pro = integrate_to(pro_fpr, pro_y, fpr_limit) / fpr_limit

    return LocalisationMetrics(
        pixel_auroc=auroc,
        pixel_ap=ap,
        pro=pro,
        pixel_f1_max=float(f1.max()),
        image_auroc=image_auroc(maps, masks),
        curves={
            "roc": _thinned(fpr, tpr),
            "pr": _thinned(recall, precision),
            "pro": _thinned(pro_fpr[pro_fpr <= fpr_limit], pro_y[pro_fpr <= fpr_limit]),
        },
    )


def _thinned(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> Curve:
    """At most ``points`` evenly spaced points of a curve (for plots and reports)."""
    keep = np.unique(np.linspace(0, x.size - 1, min(points, x.size)).round().astype(np.int64))
    return Curve(x[keep], y[keep])


def image_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """AUROC of each map's maximum against "the mask has an anomaly"; NaN with a single class."""
    labels = np.array([bool(np.any(g)) for g in masks])
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, [float(np.max(m)) for m in maps]))
