"""Poisson-editing injection and the difference mask, shared by CAI and NSA.

Pure array functions (no file I/O): :func:`clone_patch` pastes a source patch into a
target by Poisson editing (normal or mixed mode) so that the patch's box is centred on
a given location, :func:`difference_mask` is the paper's Eq. 4 (after NSA): the
grey-level difference between result and target, thresholded, then median-filtered,
and :func:`inject_patch` chains them, keeping only foreground pixels, on the clone box
alone (nothing outside it can change).

Two solvers give the same edit: ``"dst"`` (:mod:`daad.synthesis.poisson`, the default,
several times faster) and ``"opencv"`` (``cv2.seamlessClone`` itself, as the paper's
authors ran it); they agree within one grey level.

``cv2.seamlessClone`` erodes the mask it is given (3 x 3 kernel, 3 iterations) before
taking the source gradients, which erases thin patterns (cracks, scratches) entirely;
hence the mask is closed and then dilated by ``DILATE_KERNEL`` (radius 5 > 3) first,
leaving a thin band of source pixels around the pattern.

Two mask rules: ``"paper"`` is Eq. 4 over the whole clone box; ``"pattern"`` (daad's
default for CAI) keeps the thresholded difference only on the placed source pattern
(its mask, resized and moved, dilated by ``PATTERN_DILATE`` px), closed by 3 x 3 to fill
pinholes instead of the median filter. The paper's rule marks the smooth Poisson halo around a pattern, which is not an
anomaly, and its 7 x 7 median erases injected lines thinner than about 4 px; the
pattern rule marks what was injected.
"""

from __future__ import annotations

import cv2
import numpy as np

from daad.synthesis.poisson import seamless_clone

CLONE_FLAGS = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}
SOLVERS = ("dst", "opencv")
CLOSE_KERNEL = 5
DILATE_KERNEL = 11
MASK_RULES = ("pattern", "paper")
PATTERN_DILATE = 2
"""Pixels the placed pattern's mask is grown by under the ``pattern`` mask rule."""
PATTERN_GROW = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * PATTERN_DILATE + 1, 2 * PATTERN_DILATE + 1))
CLOSE_3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


def check_blend(mode: str, solver: str) -> None:
    """``ValueError`` unless ``mode`` is a Poisson-editing mode and ``solver`` a solver."""
    if mode not in CLONE_FLAGS:
        raise ValueError(f"mode must be one of {tuple(CLONE_FLAGS)}, got {mode!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")


def clone_margin(dilate_kernel: int) -> int:
    """Pixels the clone region (dilated mask) extends beyond the patch box on each side."""
    return dilate_kernel // 2


def prepare_clone(
    patch: np.ndarray, mask: np.ndarray, close_kernel: int, dilate_kernel: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """The padded source and its closed + dilated clone mask (0/255), and the padding.

    ``mask`` touches all four edges of ``patch`` (a crop to its box), so the dilated
    mask's box is the patch box grown by ``dilate_kernel // 2`` on every side and
    ``cv2.seamlessClone`` centres it exactly where the patch box is centred.
    """
    pad = clone_margin(dilate_kernel) + 1
    src = cv2.copyMakeBorder(patch, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    m = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    if close_kernel > 1:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_kernel,) * 2))
    if dilate_kernel > 1:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dilate_kernel,) * 2))
    return src, (m > 0).astype(np.uint8) * 255, pad


def clone_patch(
    target: np.ndarray,
    patch: np.ndarray,
    mask: np.ndarray,
    centre: tuple[int, int],
    mode: str,
    *,
    close_kernel: int = CLOSE_KERNEL,
    dilate_kernel: int = DILATE_KERNEL,
    solver: str = "dst",
) -> np.ndarray:
    """``target`` with ``patch`` Poisson-blended so its box is centred on ``centre`` (x, y).

    The patch box spans ``[cx - w // 2, cx - w // 2 + w)`` horizontally (likewise
    vertically); the caller guarantees the clone box (patch box grown by
    :func:`clone_margin`) lies inside ``target``.
    """
    src, clone_mask, pad = prepare_clone(patch, mask, close_kernel, dilate_kernel)
    x, y, w, h = cv2.boundingRect(clone_mask)
    h0, w0 = patch.shape[:2]
    # Both solvers put the clone box's top-left at (p - size // 2); align the patch box.
    px = centre[0] - w0 // 2 - (pad - x) + w // 2
    py = centre[1] - h0 // 2 - (pad - y) + h // 2
    check_blend(mode, solver)
    if solver == "opencv":
        return cv2.seamlessClone(src, target, clone_mask, (int(px), int(py)), CLONE_FLAGS[mode])
    return seamless_clone(src, target, clone_mask, (int(px), int(py)), mode)


def inject_patch(
    target: np.ndarray,
    foreground: np.ndarray,
    patch: np.ndarray,
    mask: np.ndarray,
    centre: tuple[int, int],
    mode: str,
    *,
    threshold: int,
    median: int,
    close_kernel: int = CLOSE_KERNEL,
    dilate_kernel: int = DILATE_KERNEL,
    solver: str = "dst",
    mask_rule: str = "paper",
) -> tuple[np.ndarray, np.ndarray]:
    """``(result, mask)``: the patch cloned at ``centre``, kept on ``foreground`` pixels only,
    and its mask (0/1) by ``mask_rule``: :func:`difference_mask` (``paper``), or that
    difference without the median filter on the dilated placed pattern (``pattern``).

    Only the clone box can change, so the foreground cut and the mask are computed on
    it (plus the median filter's radius): the same arrays as on the whole image.
    """
    cloned = clone_patch(
        target, patch, mask, centre, mode, close_kernel=close_kernel, dilate_kernel=dilate_kernel, solver=solver
    )
    h0, w0 = patch.shape[:2]
    margin = clone_margin(dilate_kernel) + median // 2
    x0, y0 = max(0, centre[0] - w0 // 2 - margin), max(0, centre[1] - h0 // 2 - margin)
    box = np.s_[y0 : centre[1] - h0 // 2 + h0 + margin, x0 : centre[0] - w0 // 2 + w0 + margin]
    result = target.copy()
    result[box] = keep_inside(cloned[box], target[box], foreground[box])
    diff = np.zeros(foreground.shape, np.uint8)
    if mask_rule == "paper":
        diff[box] = difference_mask(result[box], target[box], threshold, median)
        return result, diff
    if mask_rule != "pattern":
        raise ValueError(f"mask rule must be one of {', '.join(MASK_RULES)}, got {mask_rule!r}")
    placed = np.zeros(foreground.shape, np.uint8)
    px, py = centre[0] - w0 // 2, centre[1] - h0 // 2
    placed[py : py + h0, px : px + w0] = mask > 0
    on_pattern = cv2.dilate(placed[box], PATTERN_GROW) & (foreground[box] > 0)
    changed = difference_mask(result[box], target[box], threshold, median=1) & on_pattern
    diff[box] = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, CLOSE_3) & on_pattern  # fills pinholes, keeps thin lines
    return result, diff


def select_location(
    foreground: np.ndarray, size: tuple[int, int], margin: int, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A uniform draw among foreground pixels where a ``size`` box (+ ``margin``) fits, else ``None``.

    The legal centres form one rectangle of the image; candidates are the foreground
    pixels in it (array slice, no per-pixel loop).
    """
    height, width = foreground.shape
    w, h = size
    x0, y0 = w // 2 + margin, h // 2 + margin
    x1, y1 = width - w + w // 2 - margin, height - h + h // 2 - margin
    if x1 < x0 or y1 < y0:
        return None
    window = foreground[y0 : y1 + 1, x0 : x1 + 1]
    candidates = np.flatnonzero(window)
    if candidates.size == 0:
        return None
    k = int(candidates[rng.integers(candidates.size)])
    return x0 + k % window.shape[1], y0 + k // window.shape[1]


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def difference_mask(result: np.ndarray, target: np.ndarray, threshold: int = 7, median: int = 7) -> np.ndarray:
    """0/1 mask: ``|grey(result) - grey(target)| > threshold``, median-filtered (Eq. 4)."""
    binary = (cv2.absdiff(grey(result), grey(target)) > threshold).astype(np.uint8)
    return cv2.medianBlur(binary, median) if median > 1 else binary


def keep_inside(result: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``result`` where ``region`` is non-zero, ``target`` elsewhere."""
    out = target.copy()
    np.copyto(out, result, where=region[..., None] != 0)
    return out
