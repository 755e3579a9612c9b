"""DRAEM-style anomalies (Zavrtanik et al., ICCV 2021): Perlin-noise masks filled with a texture.

A Perlin noise (scale ``2**k`` cells per axis, ``k`` uniform in ``[0, 6)`` per axis) is
rotated by up to 90 degrees and thresholded at 0.5: that is the mask. A texture image,
resized to the target, is blended in with opacity: ``result = target * (1 - m) +
((1 - beta) * texture + beta * target) * m`` with ``beta`` uniform in [0, 0.8].
Textures come from a local folder (e.g. DTD, which DRAEM used) or, by default, from
the images of a leak-free registry view (their ids are then recorded as sources).
DRAEM's imgaug colour augmentations of the texture are not reproduced.

Reference: Vitjan Zavrtanik, Matej Kristan, Danijel Skočaj. DRAEM - A Discriminatively
Trained Reconstruction Embedding for Surface Anomaly Detection. ICCV 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from daad.registry.registry import require_view
from daad.synthesis.base import GenerationReport, Synthesis, Target, per_target_rows
from daad.synthesis.baselines import BaselineError
from daad.synthesis.baselines.perlin import perlin_noise

if TYPE_CHECKING:
    from daad.registry import RegistryView


@dataclass(frozen=True)
class DRAEMConfig:
    per_target: int = 10
    perlin_scale: tuple[int, int] = (0, 6)
    """Exponent range ``[low, high)`` of the noise's cells per axis (powers of two)."""
    threshold: float = 0.5
    rotation: float = 90.0
    beta: tuple[float, float] = (0.0, 0.8)
    min_mask_px: int = 10
    max_tries: int = 20


@dataclass(frozen=True, slots=True)
class Texture:
    """A texture image, read when used."""

    id: str
    read: Callable[[], np.ndarray]
    """Returns ``H x W x 3`` ``uint8`` RGB."""
    registry_record: bool = False


def folder_textures(folder: Path) -> list[Texture]:
    """Every image under ``folder`` (sorted) as a texture."""
    from daad.synthesis.targets import folder_items

    return [Texture(tid, partial(_read_file, tid, path)) for tid, path in folder_items(Path(folder))]


def registry_textures(view: RegistryView) -> list[Texture]:
    """The images of a registry view as textures (their ids go into ``source_ids``)."""
    return [Texture(r.id, partial(view.read_image, r), True) for r in view]


def _read_file(tid: str, path: Path) -> np.ndarray:
    from daad.synthesis.targets import load_targets

    return next(load_targets([(tid, path)], None)).image


def perlin_mask(shape: tuple[int, int], config: DRAEMConfig, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 mask: rotated Perlin noise above ``config.threshold``."""
    res = tuple(2 ** int(rng.integers(*config.perlin_scale)) for _ in range(2))
    noise = perlin_noise(shape, res, rng).astype(np.float32)
    height, width = shape
    rotation = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-1, 1) * config.rotation, 1)
    noise = cv2.warpAffine(noise, rotation, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return (noise > config.threshold).astype(np.uint8)


def draem_blend(
    target: np.ndarray, texture: np.ndarray, mask: np.ndarray, beta: float
) -> np.ndarray:
    """``target`` with ``texture`` blended into ``mask`` at opacity ``1 - beta``."""
    m = mask[..., None].astype(np.float32)
    t = target.astype(np.float32)
    return np.clip(t * (1 - m) + ((1 - beta) * texture.astype(np.float32) + beta * t) * m, 0, 255).round().astype(np.uint8)


class DRAEM:
    """DRAEM-style pseudo-anomalies (``draem``); textures from a folder or a registry view."""

    name = "draem"

    def __init__(self, config: DRAEMConfig | None = None, textures: Sequence[Texture] | None = None) -> None:
        self.config = config or DRAEMConfig()
        self.textures = list(textures) if textures is not None else None
        self.texture_source = "registry" if textures is None else "folder"
        self.report = GenerationReport()

    def params(self) -> dict[str, Any]:
        return asdict(self.config) | {"textures": self.texture_source}

    def prepare(self, view: RegistryView | None) -> None:
        """Without a texture folder, take the images of ``view`` (a RegistryView, else LeakageError)."""
        if self.texture_source == "registry":
            self.textures = registry_textures(require_view(view, self.name))

    def generate(self, targets: Iterable[Target], view: RegistryView | None, seed: int) -> Iterator[Synthesis]:
        """Rows for ``targets``; without a texture folder, ``view`` must be a RegistryView."""
        self.prepare(view)
        return per_target_rows(self, list(targets), seed)

    def rows_for(self, targets: Sequence[Target], index: int, seed: int) -> Iterator[Synthesis]:
        """The rows of ``targets[index]``, drawn from ``default_rng([seed, index])``."""
        if not self.textures:
            raise BaselineError("DRAEM has no texture images (empty folder or registry view)")
        rng = np.random.default_rng([seed, index])
        target = targets[index]
        height, width = target.image.shape[:2]
        for _ in range(self.config.per_target):
            for attempt in range(self.config.max_tries):
                mask = perlin_mask((height, width), self.config, rng)
                if int(np.count_nonzero(mask)) >= self.config.min_mask_px:
                    break
                self.report.failures["tiny_mask"] += 1
            else:
                self.report.gave_up += 1
                continue
            texture = self.textures[int(rng.integers(len(self.textures)))]
            beta = float(rng.uniform(*self.config.beta))
            image = cv2.resize(texture.read(), (width, height), interpolation=cv2.INTER_AREA)
            details = {"texture": texture.id, "beta": round(beta, 6), "retries": attempt}
            sources = (texture.id,) if texture.registry_record else ()
            self.report.rows += 1
            self.report.retries += attempt
            yield Synthesis(draem_blend(target.image, image, mask, beta), mask, None, target.id, sources, details)
