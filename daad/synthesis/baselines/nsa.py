"""NSA, Natural Synthetic Anomalies (Schlüter et al., ECCV 2022).

A rectangular patch of *another* normal image of the same target domain, resized by
a factor in [0.7, 1.3], is Poisson-blended (normal or mixed mode, the solver shared
with CAI: :func:`daad.synthesis.injection.inject_patch`) at a location whose centre lies in the target's foreground and whose box lies
inside the image; only foreground pixels keep the result. The mask is the thresholded,
median-filtered grey difference, as NSA derives it (shared with CAI:
:func:`daad.synthesis.injection.difference_mask`); empty or tiny masks are retried.

Reference: Hannah M. Schlüter, Jeremy Tan, Benjamin Hou, Bernhard Kainz. Natural
Synthetic Anomalies for Self-Supervised Anomaly Detection and Localization. ECCV 2022.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from daad.synthesis.base import GenerationReport, Synthesis, Target, per_target_rows
from daad.synthesis.baselines import BaselineError
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.injection import (
    CLOSE_KERNEL,
    DILATE_KERNEL,
    check_blend,
    clone_margin,
    inject_patch,
    select_location,
)

if TYPE_CHECKING:
    from daad.registry import RegistryView


@dataclass(frozen=True)
class NSAConfig:
    mode: str = "normal"
    per_target: int = 10
    patch_fraction: tuple[float, float] = (0.1, 0.4)
    """Patch width and height as fractions of the image's, each drawn in this range."""
    resize: tuple[float, float] = (0.7, 1.3)
    threshold: int = 7
    median: int = 7
    close_kernel: int = CLOSE_KERNEL
    dilate_kernel: int = DILATE_KERNEL
    min_mask_px: int = 10
    max_tries: int = 20
    solver: str = "dst"

    def __post_init__(self) -> None:
        check_blend(self.mode, self.solver)


def nsa_patch(
    target: np.ndarray, source: np.ndarray, foreground: np.ndarray, config: NSAConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """One NSA attempt: ``(result, mask, centre)``, ``None`` when it fails (no location, tiny mask)."""
    height, width = source.shape[:2]
    w = max(3, round(rng.uniform(*config.patch_fraction) * width))
    h = max(3, round(rng.uniform(*config.patch_fraction) * height))
    sx, sy = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
    factor = rng.uniform(*config.resize)
    size = (max(3, min(round(w * factor), target.shape[1])), max(3, min(round(h * factor), target.shape[0])))
    patch = cv2.resize(source[sy : sy + h, sx : sx + w], size, interpolation=cv2.INTER_LINEAR)
    centre = select_location(foreground, size, clone_margin(config.dilate_kernel), rng)
    if centre is None:
        return None
    result, mask = inject_patch(
        target, foreground, patch, np.ones(patch.shape[:2], np.uint8), centre, config.mode,
        threshold=config.threshold, median=config.median,
        close_kernel=config.close_kernel, dilate_kernel=config.dilate_kernel, solver=config.solver,
    )
    if int(np.count_nonzero(mask)) < config.min_mask_px:
        return None
    return result, mask, centre


class NSA:
    """NSA in normal (``nsa-normal``) or mixed (``nsa-mixed``) mode; uses no registry record."""

    def __init__(self, config: NSAConfig | None = None, foreground: ForegroundExtractor | None = None) -> None:
        self.config = config or NSAConfig()
        self.foreground = foreground or ForegroundExtractor()
        self.report = GenerationReport()

    @property
    def name(self) -> str:
        return f"nsa-{self.config.mode}"

    def params(self) -> dict[str, Any]:
        return asdict(self.config) | {"foreground": self.foreground.method}

    def prepare(self, view: RegistryView | None) -> None:
        """Nothing to load: patches come from the targets."""

    def generate(self, targets: Iterable[Target], view: RegistryView | None, seed: int) -> Iterator[Synthesis]:
        self.prepare(view)
        return per_target_rows(self, list(targets), seed)

    def rows_for(self, targets: Sequence[Target], index: int, seed: int) -> Iterator[Synthesis]:
        """The rows of ``targets[index]``, with patches of the other targets."""
        if len(targets) < 2:
            raise BaselineError("NSA needs at least two target images (patches come from another normal image)")
        rng = np.random.default_rng([seed, index])
        target = targets[index]
        foreground = self.foreground(target.id, target.image)
        for _ in range(self.config.per_target):
            for attempt in range(self.config.max_tries):
                other = int(rng.integers(len(targets) - 1))
                source = targets[other + (other >= index)]
                outcome = nsa_patch(target.image, source.image, foreground, self.config, rng)
                if outcome is not None:
                    image, mask, centre = outcome
                    details = {"mode": self.config.mode, "source_target": source.id,
                               "location": list(centre), "retries": attempt}
                    self.report.rows += 1
                    self.report.retries += attempt
                    yield Synthesis(image, mask, None, target.id, (), details)
                    break
                self.report.failures["no_location_or_tiny_mask"] += 1
            else:
                self.report.gave_up += 1
