"""Localisation metrics on anomaly maps: pixel AUROC, pixel AP, PRO, pixel F1-max, image AUROC.

Every pixel-level metric is exact and comes from one sort of the *normal* pixels' scores
(``float32``, in place) and one of the anomalous pixels' scores: at each distinct score ``t``
of an anomalous pixel, the counts of normal pixels scoring ``>= t`` and ``> t`` come from a
binary search (:func:`operating_points`). Recall and region overlap change only at those
scores, so these points (two per score: just above and at it) trace the whole ROC, precision-
recall and PRO curve; between them the curves run flat. Memory: 4 bytes per normal pixel
plus a few per anomalous pixel, instead of the sort of every pixel with its weights.

PRO follows the MVTec AD definition: regions are the 8-connected components of each
ground-truth mask; each anomalous pixel weighs ``1 / (area of its region * number of
regions)``, so the cumulative weight above a threshold is the mean per-region overlap; the
curve PRO(FPR) is integrated (trapezoids, linearly interpolated at the limit) from FPR 0 to
``fpr_limit`` (0.3) and divided by ``fpr_limit``, so a perfect map scores 1 and the range is [0, 1].
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


def operating_points(negatives: np.ndarray, positives: np.ndarray, *weights: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The curve's corners: ``(false positives, [cumulative positive weights])`` just above and at each
    distinct positive score, descending, from (0, 0) to (all, all). ``negatives`` must be sorted ascending."""
    order = np.argsort(positives, kind="stable")[::-1]
    scores = positives[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    thresholds = scores[last_of_tie]
    n_neg = negatives.size
    above = n_neg - np.searchsorted(negatives, thresholds, side="right")  # normals scoring > t
    at = n_neg - np.searchsorted(negatives, thresholds, side="left")  # normals scoring >= t
    fp = np.r_[0, np.column_stack([above, at]).ravel(), n_neg].astype(np.float64)
    cumulative = []
    for w in weights:
        c = np.cumsum(w[order], dtype=np.float64)[last_of_tie]
        before = np.r_[0.0, c[:-1]]
        cumulative.append(np.r_[0.0, np.column_stack([before, c]).ravel(), c[-1]])
    return fp, cumulative


def integrate_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under ``y(x)`` (``x`` ascending from 0) for ``x`` in [0, limit], interpolated at the limit."""
    inside = x <= limit
    xs, ys = x[inside], y[inside]
    if xs[-1] < limit and inside.sum() < x.size:
        nxt = int(inside.sum())
        y_limit = np.interp(limit, x[nxt - 1 : nxt + 1], y[nxt - 1 : nxt + 1])
        xs, ys = np.r_[xs, limit], np.r_[ys, y_limit]
    return float(np.trapezoid(ys, xs))


def evaluate_maps(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = PRO_FPR_LIMIT) -> LocalisationMetrics:
    """All metrics of anomaly ``maps`` (higher = more anomalous) against binary ``masks`` of the same shapes."""
    if len(maps) != len(masks) or not maps:
        raise ValueError(f"need as many maps as masks (got {len(maps)} and {len(masks)})")
    counts = []
    for i, (m, g) in enumerate(zip(maps, masks)):
        if m.shape != g.shape:
            raise ValueError(f"map {i} is {m.shape}, its mask is {g.shape}")
        counts.append(int(np.count_nonzero(g)))
    n_pos = sum(counts)
    n_neg = sum(m.size for m in maps) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("pixel metrics need both anomalous and normal pixels")

    negatives = np.empty(n_neg, np.float32)
    positives = np.empty(n_pos, np.float32)
    region_area = np.empty(n_pos, np.float64)
    regions = neg_at = pos_at = 0
    for m, g, n in zip(maps, masks, counts):
        m, truth = np.asarray(m, dtype=np.float32), np.asarray(g) > 0
        negatives[neg_at : neg_at + m.size - n] = m[~truth]
        neg_at += m.size - n
        if n:
            labels, count = ndimage.label(truth, structure=EIGHT_CONNECTED)
            positives[pos_at : pos_at + n] = m[truth]
            region_area[pos_at : pos_at + n] = np.bincount(labels.ravel())[labels[truth]]
            pos_at += n
            regions += count
    negatives.sort()

    fp, (tp, overlap) = operating_points(negatives, positives, np.ones(n_pos), 1.0 / (region_area * regions))
    fpr, tpr = fp / n_neg, tp / n_pos
    overlap /= overlap[-1]  # the weights sum to 1; this removes the rounding of their sum
    auroc = float(np.trapezoid(tpr, fpr))
    at = slice(2, -1, 2)  # the points at each positive score, where recall steps
    precision, recall = tp[at] / np.maximum(tp[at] + fp[at], 1), tp[at] / n_pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    f1 = 2 * precision * recall / np.maximum(precision + recall, np.finfo(np.float64).tiny)
    pro = integrate_to(fpr, overlap, fpr_limit) / fpr_limit

    return LocalisationMetrics(
        pixel_auroc=auroc,
        pixel_ap=ap,
        pro=pro,
        pixel_f1_max=float(f1.max()),
        image_auroc=image_auroc(maps, masks),
        curves={
            "roc": _thinned(fpr, tpr),
            "pr": _thinned(recall, precision),
            "pro": _thinned(fpr[fpr <= fpr_limit], overlap[fpr <= fpr_limit]),
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
