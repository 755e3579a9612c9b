"""The mask of a generated pair, segmented from its anomaly-part image.

The part branch learns I_a = I × M_a: the anomaly on a neutral (black) background. Default
(``method="threshold"``): the background colour is the median of the image border, a pixel
belongs to the anomaly when its largest channel difference from that colour exceeds
``threshold`` (default 24 of 255, about 10 %: above VAE decoding noise on flat regions),
then a 3x3 opening removes isolated specks. ``method="rembg"``: U²-Net saliency (rembg)
on the part image, as in the paper, with a local model file only
(:class:`daad.synthesis.foreground.RembgSegmenter`). Masks are binary ``uint8`` 0/1.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from daad.synthesis.foreground import RembgSegmenter

METHODS = ("threshold", "rembg")
DEFAULT_THRESHOLD = 24


def border_colour(image: np.ndarray) -> np.ndarray:
    """Median RGB of the outermost pixel ring: the part image's neutral background."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).reshape(-1, image.shape[-1])
    return np.median(ring, axis=0)


def threshold_mask(part: np.ndarray, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Pixels that differ from the neutral background by more than ``threshold``, specks removed."""
    difference = np.abs(part.astype(np.int16) - border_colour(part).astype(np.int16)).max(axis=-1)
    mask = (difference > threshold).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


class PartMasker:
    """Turns generated part images into binary masks with the chosen method."""

    def __init__(self, method: str = "threshold", threshold: int = DEFAULT_THRESHOLD, rembg_model: Path | None = None):
        if method not in METHODS:
            raise ValueError(f"mask method must be one of {METHODS}, got {method!r}")
        if method == "rembg" and rembg_model is None:
            raise ValueError("mask method 'rembg' needs a local U²-Net model file (--rembg-model)")
        self.method = method
        self.threshold = threshold
        self._rembg = RembgSegmenter(Path(rembg_model)) if method == "rembg" else None

    def __call__(self, part: np.ndarray) -> np.ndarray:
        if self._rembg is not None:
            return self._rembg(part)
        return threshold_mask(part, self.threshold)

    def params(self) -> dict:
        return {"method": self.method, "threshold": self.threshold if self.method == "threshold" else None}
