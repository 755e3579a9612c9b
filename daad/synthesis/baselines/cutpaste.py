"""CutPaste (Li et al., CVPR 2021): a patch of the image itself, pasted elsewhere.

``cutpaste``: a rectangle of 2-15 % of the image area, aspect ratio log-uniform in
[0.3, 3.3], brightness/contrast jittered, pasted at a uniform location.
``cutpaste-scar``: a thin rectangle (2-16 x 10-25 px at 256 px, scaled with the image),
jittered and rotated by up to 45 degrees. The mask is the pasted region.

Reference: Chun-Liang Li, Kihyuk Sohn, Jinsung Yoon, Tomas Pfister. CutPaste:
Self-Supervised Learning for Anomaly Detection and Localization. CVPR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from daad.synthesis.base import GenerationReport, Synthesis, Target, per_target_rows

if TYPE_CHECKING:
    from daad.registry import RegistryView

REFERENCE_SIZE = 256
"""The image size the scar sizes are given for."""


@dataclass(frozen=True)
class CutPasteConfig:
    scar: bool = False
    per_target: int = 10
    area_ratio: tuple[float, float] = (0.02, 0.15)
    aspect_ratio: float = 0.3
    scar_width: tuple[int, int] = (2, 16)
    scar_height: tuple[int, int] = (10, 25)
    scar_rotation: float = 45.0
    jitter: float = 0.1


def jitter(patch: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness and contrast changed by up to ``amount`` (relative)."""
    gain = 1 + rng.uniform(-amount, amount)
    offset = 255 * rng.uniform(-amount, amount)
    mean = patch.mean()
    return np.clip((patch.astype(np.float32) - mean) * gain + mean + offset, 0, 255).astype(np.uint8)


def cutpaste(image: np.ndarray, config: CutPasteConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One rectangle CutPaste: ``(result, mask)``."""
    height, width = image.shape[:2]
    area = rng.uniform(*config.area_ratio) * height * width
    aspect = math.exp(rng.uniform(math.log(config.aspect_ratio), -math.log(config.aspect_ratio)))
    w = int(np.clip(round(math.sqrt(area * aspect)), 1, width))
    h = int(np.clip(round(math.sqrt(area / aspect)), 1, height))
    sx, sy = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
    dx, dy = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
    result = image.copy()
    result[dy : dy + h, dx : dx + w] = jitter(image[sy : sy + h, sx : sx + w], config.jitter, rng)
    mask = np.zeros((height, width), np.uint8)
    mask[dy : dy + h, dx : dx + w] = 1
    return result, mask


def scar(image: np.ndarray, config: CutPasteConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One CutPaste-scar: a thin jittered patch rotated and pasted; ``(result, mask)``."""
    height, width = image.shape[:2]
    scale = min(height, width) / REFERENCE_SIZE
    w = max(1, round(rng.uniform(*config.scar_width) * scale))
    h = max(2, round(rng.uniform(*config.scar_height) * scale))
    w, h = min(w, width), min(h, height)
    sx, sy = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
    patch = jitter(image[sy : sy + h, sx : sx + w], config.jitter, rng)
    side = math.ceil(math.hypot(w, h)) | 1
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas_mask = np.zeros((side, side), np.uint8)
    ox, oy = (side - w) // 2, (side - h) // 2
    canvas[oy : oy + h, ox : ox + w] = patch
    canvas_mask[oy : oy + h, ox : ox + w] = 1
    rotation = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), rng.uniform(-1, 1) * config.scar_rotation, 1)
    canvas = cv2.warpAffine(canvas, rotation, (side, side), flags=cv2.INTER_LINEAR)
    canvas_mask = cv2.warpAffine(canvas_mask, rotation, (side, side), flags=cv2.INTER_NEAREST)
    side_y, side_x = min(side, height), min(side, width)
    canvas, canvas_mask = canvas[:side_y, :side_x], canvas_mask[:side_y, :side_x]
    dx, dy = rng.integers(0, width - side_x + 1), rng.integers(0, height - side_y + 1)
    result = image.copy()
    region = result[dy : dy + side_y, dx : dx + side_x]
    region[canvas_mask > 0] = canvas[canvas_mask > 0]
    mask = np.zeros((height, width), np.uint8)
    mask[dy : dy + side_y, dx : dx + side_x] = canvas_mask
    return result, mask


class CutPaste:
    """CutPaste / CutPaste-scar; uses no registry record (``view`` may be ``None``)."""

    def __init__(self, config: CutPasteConfig | None = None) -> None:
        self.config = config or CutPasteConfig()
        self.report = GenerationReport()

    @property
    def name(self) -> str:
        return "cutpaste-scar" if self.config.scar else "cutpaste"

    def params(self) -> dict[str, Any]:
        return asdict(self.config)

    def prepare(self, view: RegistryView | None) -> None:
        """Nothing to load: patches come from the targets."""

    def generate(self, targets: Iterable[Target], view: RegistryView | None, seed: int) -> Iterator[Synthesis]:
        self.prepare(view)
        return per_target_rows(self, list(targets), seed)

    def rows_for(self, targets: Sequence[Target], index: int, seed: int) -> Iterator[Synthesis]:
        """The rows of ``targets[index]``, drawn from ``default_rng([seed, index])``."""
        make = scar if self.config.scar else cutpaste
        rng = np.random.default_rng([seed, index])
        target = targets[index]
        for _ in range(self.config.per_target):
            image, mask = make(target.image, self.config, rng)
            self.report.rows += 1
            yield Synthesis(image, mask, None, target.id, (), {"variant": self.name})
