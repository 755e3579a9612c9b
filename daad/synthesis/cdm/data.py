"""CDM's training data: the rows of a CAI output dataset (one target domain).

Every row is an (image, mask, class) triple; CDM learns the classes' appearance from the
masked pixels and their masks' distribution from the masks. The dataset's card facts
(generator, evaluation target, inherited licences) travel into the CDM checkpoint so
that everything CDM samples later inherits them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from daad.synthesis.cdm.errors import CDMDataError
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.output import PARAMS_FILE, generator_info, read_generated
from daad.taxonomy import ANOMALY_CLASSES


@dataclass(frozen=True)
class TrainingSet:
    """Rows of a CAI dataset resized to the training resolution, plus the dataset's provenance."""

    images: np.ndarray
    """``N x R x R x 3`` ``uint8`` RGB."""
    masks: np.ndarray
    """``N x R x R`` ``uint8`` 0/1."""
    classes: tuple[str, ...]
    """The classes trained, in ClassLabel order."""
    labels: np.ndarray
    """``N`` indices into ``classes``."""
    full_masks: list[np.ndarray]
    """Masks at the images' own size (the mask generator's input)."""
    full_images: list[np.ndarray]
    source_ids: dict[str, list[str]]
    """Class -> sorted ids of the real anomalies behind its rows (provenance of every sample)."""
    info: dict
    """The CAI dataset's ``generator.json`` (generator, evaluation, licences ...)."""

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, indices: torch.Tensor) -> torch.Tensor:
        """Images ``indices`` as ``B x 3 x R x R`` floats in ``[-1, 1]``."""
        return torch.from_numpy(self.images[indices.tolist()]).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def mask_pixels(self, indices: torch.Tensor) -> torch.Tensor:
        """Masks ``indices`` as black-and-white images, ``B x 3 x R x R`` in ``[-1, 1]`` (the mask model's data)."""
        masks = torch.from_numpy(self.masks[indices.tolist()]).float().unsqueeze(1)
        return (masks * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def load_training_set(path: Path, resolution: int, classes: tuple[str, ...] | None = None) -> TrainingSet:
    """The rows of the generated dataset at ``path`` whose class is in ``classes`` (all when ``None``)."""
    path = Path(path)
    if not (path / PARAMS_FILE).is_file():
        raise CDMDataError(f"{path} is not a generated dataset (no {PARAMS_FILE}); train CDM on CAI output")
    info = generator_info(path)
    wanted = set(classes) if classes else None
    rows = [r for r in read_generated(path) if r["anomaly_class"] and (wanted is None or r["anomaly_class"] in wanted)]
    if not rows:
        raise CDMDataError(f"{path}: no rows of the classes {sorted(wanted) if wanted else 'any'}")
    present = tuple(c for c in ANOMALY_CLASSES if any(r["anomaly_class"] == c for r in rows))
    if wanted and set(present) != wanted:
        missing = sorted(wanted - set(present))
        raise CDMDataError(f"{path}: no rows of the requested classes {missing}")
    sources: dict[str, set[str]] = {c: set() for c in present}
    for r in rows:
        sources[r["anomaly_class"]].update(r["source_ids"])
    return TrainingSet(
        images=np.stack([resize_image(r["image"], resolution) for r in rows]),
        masks=np.stack([resize_mask(r["mask"], resolution) for r in rows]),
        classes=present,
        labels=np.asarray([present.index(r["anomaly_class"]) for r in rows], dtype=np.int64),
        full_masks=[r["mask"] for r in rows],
        full_images=[r["image"] for r in rows],
        source_ids={c: sorted(s) for c, s in sources.items()},
        info=info,
    )


def resize_image(image: np.ndarray, resolution: int) -> np.ndarray:
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    interp = cv2.INTER_AREA if max(rgb.shape[:2]) > resolution else cv2.INTER_LINEAR
    return cv2.resize(rgb, (resolution, resolution), interpolation=interp)


def resize_mask(mask: np.ndarray, resolution: int) -> np.ndarray:
    """Downscale that keeps thin anomalies (any covered pixel counts); nearest when upscaling."""
    interp = cv2.INTER_AREA if max(mask.shape) > resolution else cv2.INTER_NEAREST
    small = cv2.resize((mask != 0).astype(np.float32), (resolution, resolution), interpolation=interp)
    return (small > 0).astype(np.uint8)


def foreground_extractor(method: str, rembg_model: Path | None = None) -> ForegroundExtractor:
    """The foreground method CDM places masks with; warns when ``auto`` falls back from rembg to Otsu."""
    extractor = ForegroundExtractor(method, rembg_model)
    if method == "auto" and extractor.method == "classical":
        warnings.warn(
            "CDM: no rembg model (--rembg-model or DAAD_REMBG_MODEL), so the foreground is Otsu's threshold "
            "(method 'classical'), which can miss the object on cluttered or low-contrast images",
            stacklevel=2,
        )
    return extractor
