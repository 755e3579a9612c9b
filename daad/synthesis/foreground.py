"""The foreground mask ``M_f`` of a target image: where injected anomalies may go.

Three ways, in order of preference (``method="auto"``):

- **rembg** (U²-Net) when a model file is available locally: ``model_path`` or the
  environment variable ``DAAD_REMBG_MODEL`` (an ``.onnx`` file). Never downloaded.
- **classical** fallback: Otsu threshold of the blurred grey image, the polarity whose
  foreground touches the image border least, morphological closing and opening, holes
  filled, the largest connected component kept. The image is taken for a texture (all
  ones) when Otsu's separability (between-class / total variance) is below
  ``SEPARABILITY_MIN`` (unimodal grey levels: no object/background split; a Gaussian
  histogram gives 0.64, KolektorSDD, SD-saliency-900 and CrackForest give 0.5-0.75), or
  when the mask covers almost nothing or almost everything (< 5 % or > 90 %).
- **full**: an all-ones mask, for textures (the paper's choice for images without an object).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from daad.errors import DaadError

METHODS = ("auto", "rembg", "classical", "full")
TEXTURE_LOW, TEXTURE_HIGH = 0.05, 0.90
SEPARABILITY_MIN = 0.8


class ForegroundError(DaadError):
    """A requested foreground method cannot run (e.g. rembg without a local model)."""


def full_mask(image: np.ndarray) -> np.ndarray:
    return np.ones(image.shape[:2], dtype=np.uint8)


def classical_mask(image: np.ndarray) -> np.ndarray:
    """Otsu + morphology + largest component; all ones when the image looks like a texture."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    blur = cv2.GaussianBlur(grey, (5, 5), 0)
    _, otsu = cv2.threshold(blur, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if otsu_separability(blur, otsu) < SEPARABILITY_MIN:
        return full_mask(image)
    border = np.concatenate([otsu[0], otsu[-1], otsu[:, 0], otsu[:, -1]])
    mask = otsu if border.mean() < 0.5 else 1 - otsu
    k = max(3, (min(mask.shape) // 64) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n > 1:
        mask = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    mask = _fill_holes(mask)
    fraction = mask.mean()
    if fraction < TEXTURE_LOW or fraction > TEXTURE_HIGH:
        return full_mask(image)
    return mask


def otsu_separability(grey: np.ndarray, split: np.ndarray) -> float:
    """Between-class variance over total variance of ``grey`` split by the 0/1 ``split``."""
    total = float(grey.var())
    fraction = float(split.mean())
    if total == 0 or fraction in (0.0, 1.0):
        return 0.0
    values = grey.astype(np.float64)
    gap = values[split == 1].mean() - values[split == 0].mean()
    return fraction * (1 - fraction) * gap * gap / total


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = 1 - flood
    return (padded | holes)[1:-1, 1:-1].astype(np.uint8)


@dataclass
class RembgSegmenter:
    """U²-Net through rembg's own session class, with a model file given locally."""

    model_path: Path
    _session: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not Path(self.model_path).is_file():
            raise ForegroundError(f"rembg model file {self.model_path} does not exist")

    def session(self):
        if self._session is None:
            import onnxruntime as ort
            from rembg.sessions.u2net import U2netSession

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.log_severity_level = 3
            session = U2netSession.__new__(U2netSession)
            session.model_name = "u2net"
            session.inner_session = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._session = session
        return self._session

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        matte = self.session().predict(Image.fromarray(image).convert("RGB"))[0]
        return (np.asarray(matte) > 127).astype(np.uint8)


def rembg_model_path(model_path: Path | str | None) -> Path | None:
    value = model_path or os.environ.get("DAAD_REMBG_MODEL")
    return Path(value).expanduser() if value else None


class ForegroundExtractor:
    """Computes ``M_f`` once per target id and caches it."""

    def __init__(self, method: str = "auto", model_path: Path | str | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"foreground method must be one of {METHODS}, got {method!r}")
        path = rembg_model_path(model_path)
        if method == "rembg" and path is None:
            raise ForegroundError("foreground 'rembg' needs a local model: --rembg-model PATH or DAAD_REMBG_MODEL")
        self._rembg = RembgSegmenter(path) if method in ("auto", "rembg") and path is not None else None
        self.method = method if method != "auto" else ("rembg" if self._rembg else "classical")
        self._cache: dict[str, np.ndarray] = {}

    def provide(self, target_id: str, mask: np.ndarray) -> None:
        """Use a foreground mask the caller already has (e.g. from an annotation) for ``target_id``."""
        self._cache[target_id] = (np.asarray(mask) != 0).astype(np.uint8)

    def __call__(self, target_id: str, image: np.ndarray) -> np.ndarray:
        mask = self._cache.get(target_id)
        if mask is None:
            if self.method == "full":
                mask = full_mask(image)
            elif self.method == "rembg":
                mask = self._rembg(image)
                if not mask.any():
                    mask = full_mask(image)
            else:
                mask = classical_mask(image)
            self._cache[target_id] = mask
        return mask
