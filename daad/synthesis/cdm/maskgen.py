"""CDM's masks: where a new anomaly goes, how big it is and what shape it has.

Two generators, chosen at sampling (``--mask-generator``):

- ``learnt`` (the paper's design, AnomalyDiffusion's ``train_mask.py``): a textual-inversion
  diffusion model of each class's masks: the token ``<class-mask>`` is trained with the base
  model on the CAI masks as black-and-white images (:mod:`~daad.synthesis.cdm.train`), and
  sampling generates a mask image from ``a photo of <class-mask>``; :func:`mask_from_image`
  thresholds it and keeps it on the target's foreground. It can produce shapes no training
  mask had.
- ``bank`` (:class:`MaskBank`, the named fallback; a statistical stand-in, not learnt): the
  bank of training mask crops, each drawn with a random rotation, flip and anisotropic
  stretch (``SHAPE_SIDE`` px at most); size from a log-normal kernel density over the mask
  area relative to the foreground area (``size_bandwidth``), position from a kernel
  density over the mask centre relative to the foreground's bounding box
  (``position_bandwidth``). It only recombines DAAD's shapes. The learnt generator falls
  back to it for a mask that comes out empty on the target's foreground.

Either mask is clipped to the target's foreground and is never empty.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from daad.atomic import write_atomically
from daad.masks import bbox_of
from daad.synthesis.cdm.errors import CDMCheckpointError, CDMDataError

SHAPE_SIDE = 64
"""Longest side of a stored shape; thin structures survive the downscale (threshold 0.25)."""


@dataclass(frozen=True)
class ClassMasks:
    """The fitted mask distribution of one class."""

    shapes: tuple[np.ndarray, ...]
    """Binary ``uint8`` crops of the training masks."""
    areas: np.ndarray
    """Mask area / foreground area, one per shape."""
    centres: np.ndarray
    """``(n, 2)`` mask centres ``(x, y)`` relative to the foreground bounding box, in 0..1."""


@dataclass(frozen=True)
class MaskBank:
    """The fallback mask generator: per-class banks of CAI mask shapes with size and position densities."""

    classes: dict[str, ClassMasks]
    size_bandwidth: float = 0.3
    position_bandwidth: float = 0.08

    @classmethod
    def fit(
        cls,
        masks: list[np.ndarray],
        foregrounds: list[np.ndarray],
        anomaly_classes: list[str],
        **bandwidths: float,
    ) -> MaskBank:
        """Fit from training masks, the foregrounds of their images and their classes."""
        grouped: dict[str, tuple[list, list, list]] = {}
        for mask, fg, name in zip(masks, foregrounds, anomaly_classes, strict=True):
            box = bbox_of(mask)
            if box is None:
                continue
            fg = fg if fg.any() else np.ones_like(fg)
            fx, fy, fw, fh = bbox_of(fg)
            ys, xs = np.nonzero(mask)
            shapes, areas, centres = grouped.setdefault(name, ([], [], []))
            shapes.append(_shrink(mask[box[1] : box[1] + box[3], box[0] : box[0] + box[2]]))
            areas.append(xs.size / max(1, int(fg.sum())))
            centres.append(((xs.mean() - fx + 0.5) / fw, (ys.mean() - fy + 0.5) / fh))
        if not grouped:
            raise CDMDataError("no non-empty mask to fit the mask generator on")
        fitted = {
            name: ClassMasks(tuple(s), np.asarray(a, dtype=np.float64), np.clip(np.asarray(c, dtype=np.float64), 0, 1))
            for name, (s, a, c) in sorted(grouped.items())
        }
        return cls(fitted, **bandwidths)

    def sample(self, anomaly_class: str, foreground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A new binary ``uint8`` mask of ``foreground``'s size, non-empty, inside the foreground."""
        if anomaly_class not in self.classes:
            raise CDMCheckpointError(f"the mask bank knows no class {anomaly_class!r} (has {sorted(self.classes)})")
        dist = self.classes[anomaly_class]
        fg = (foreground != 0).astype(np.uint8)
        if not fg.any():
            fg = np.ones_like(fg)
        i = int(rng.integers(len(dist.shapes)))
        j = int(rng.integers(len(dist.centres)))
        area = dist.areas[i] * float(np.exp(rng.normal(0.0, self.size_bandwidth)))
        centre = np.clip(dist.centres[j] + rng.normal(0.0, self.position_bandwidth, size=2), 0.0, 1.0)
        shape = _transform(dist.shapes[i], rng)
        target_px = max(1.0, area * float(fg.sum()))
        scale = float(np.sqrt(target_px / max(1, int(shape.sum()))))
        fx, fy, fw, fh = bbox_of(fg)
        cx, cy = _snap(fg, fx + centre[0] * fw, fy + centre[1] * fh)
        mask = _place(shape, scale, cx, cy, fg.shape)
        mask &= fg
        mask[cy, cx] = 1
        return mask

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "classes": np.asarray(sorted(self.classes)),
            "bandwidths": np.asarray([self.size_bandwidth, self.position_bandwidth]),
        }
        for name, dist in self.classes.items():
            arrays[f"{name}/areas"] = dist.areas
            arrays[f"{name}/centres"] = dist.centres
            arrays[f"{name}/sizes"] = np.asarray([s.shape for s in dist.shapes], dtype=np.int64)
            arrays[f"{name}/pixels"] = np.concatenate([s.ravel() for s in dist.shapes])
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_atomically(Path(path), [buffer.getvalue()])

    @classmethod
    def load(cls, path: Path) -> MaskBank:
        if not Path(path).is_file():
            raise CDMCheckpointError(f"mask bank file {path} does not exist")
        with np.load(path, allow_pickle=False) as data:
            classes = {}
            for name in data["classes"].tolist():
                sizes, pixels = data[f"{name}/sizes"], data[f"{name}/pixels"]
                ends = np.cumsum([h * w for h, w in sizes])
                shapes = tuple(
                    chunk.reshape(h, w).astype(np.uint8)
                    for chunk, (h, w) in zip(np.split(pixels, ends[:-1]), sizes, strict=True)
                )
                classes[name] = ClassMasks(shapes, data[f"{name}/areas"], data[f"{name}/centres"])
            size_bw, position_bw = data["bandwidths"].tolist()
        return cls(classes, size_bandwidth=size_bw, position_bandwidth=position_bw)


MASK_LEVEL = 127
"""A generated mask image's pixel is in the mask when its grey level is above this."""


def mask_from_image(image: np.ndarray, foreground: np.ndarray) -> np.ndarray | None:
    """A generated ``R x R x 3`` mask image as a binary ``uint8`` mask of ``foreground``'s size,
    clipped to it; None when nothing of it is left on the foreground."""
    grey = image.mean(axis=2) if image.ndim == 3 else image
    h, w = foreground.shape
    mask = (cv2.resize(grey.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > MASK_LEVEL).astype(np.uint8)
    mask &= (foreground != 0).astype(np.uint8) if foreground.any() else np.uint8(1)
    return mask if mask.any() else None


def _shrink(crop: np.ndarray) -> np.ndarray:
    crop = (crop != 0).astype(np.uint8)
    side = max(crop.shape)
    if side <= SHAPE_SIDE:
        return crop
    f = SHAPE_SIDE / side
    size = (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f)))
    small = cv2.resize(crop.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return (small >= 0.25).astype(np.uint8)


def _transform(shape: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flip, rotation and stretch of a binary shape, on a canvas that holds all of it."""
    if rng.random() < 0.5:
        shape = shape[:, ::-1]
    angle = float(rng.uniform(-180.0, 180.0))
    sx, sy = np.exp(rng.normal(0.0, 0.15, size=2))
    h, w = shape.shape
    side = int(np.ceil(np.hypot(h * sy, w * sx))) + 2
    rot = cv2.getRotationMatrix2D((0.0, 0.0), angle, 1.0)
    affine = rot @ np.array([[sx, 0.0, -w / 2 * sx], [0.0, sy, -h / 2 * sy], [0.0, 0.0, 1.0]])
    affine[:, 2] += side / 2
    warped = cv2.warpAffine(np.ascontiguousarray(shape, dtype=np.float32), affine, (side, side), flags=cv2.INTER_LINEAR)
    out = (warped >= 0.5).astype(np.uint8)
    if not out.any():
        out[side // 2, side // 2] = 1
    box = bbox_of(out)
    return out[box[1] : box[1] + box[3], box[0] : box[0] + box[2]]


def _snap(fg: np.ndarray, x: float, y: float) -> tuple[int, int]:
    """The foreground pixel nearest to ``(x, y)``."""
    xi = int(np.clip(round(x), 0, fg.shape[1] - 1))
    yi = int(np.clip(round(y), 0, fg.shape[0] - 1))
    if fg[yi, xi]:
        return xi, yi
    ys, xs = np.nonzero(fg)
    k = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
    return int(xs[k]), int(ys[k])


def _place(shape: np.ndarray, scale: float, cx: int, cy: int, size: tuple[int, int]) -> np.ndarray:
    """``shape`` resized by ``scale`` and centred at ``(cx, cy)`` on an empty mask of ``size``."""
    h, w = shape.shape
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(shape.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR) >= 0.5
    mask = np.zeros(size, dtype=np.uint8)
    x0, y0 = cx - nw // 2, cy - nh // 2
    ax0, ay0 = max(0, x0), max(0, y0)
    ax1, ay1 = min(size[1], x0 + nw), min(size[0], y0 + nh)
    if ax1 > ax0 and ay1 > ay0:
        mask[ay0:ay1, ax0:ax1] = resized[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    return mask
