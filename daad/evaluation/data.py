"""What the detector is trained and scored on: an evaluation dataset and generated datasets.

An :class:`EvaluationSet` holds the evaluation dataset's normal training images and its
test images (real anomalies with masks, plus held-out normals with empty masks), read
through the dataset's loader. A generated dataset (the folder a generator writes) gives
the synthetic anomaly rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from daad.errors import DaadError
from daad.images import decode_image, read_verified, to_rgb_array
from daad.annotations.bitmap import read_mask
from daad.synthesis.output import generator_info, read_generated
from daad.synthesis.targets import IMAGE_SUFFIXES

TRAIN_FRACTION = 0.8
"""The seeded split's share of normals that train, where a dataset publishes no split."""
SPLIT_SEED = 0


class EvaluationDataError(DaadError):
    """An evaluation or generated dataset cannot be used (missing, empty, unreadable); names it."""


@dataclass(frozen=True, slots=True)
class Sample:
    id: str
    image: np.ndarray
    """``H x W x 3`` ``uint8`` RGB, or ``H x W`` for a grey image (a third of the memory; :func:`as_rgb` expands it)."""
    mask: np.ndarray
    """``H x W`` ``uint8`` 0/1; all zero for a normal image (a read-only view of one zero byte, :func:`no_mask`)."""
    defect: str = ""
    """The dataset's defect type (``broken_large``, ``ko`` ...); empty for a normal image."""


@dataclass(frozen=True)
class EvaluationSet:
    name: str
    train_normals: list[Sample]
    test: list[Sample]
    """Real anomalies and held-out normals."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Items of the dataset that could not be scored (no mask, empty mask ...), counted by reason."""

    @property
    def test_anomalies(self) -> list[Sample]:
        return [s for s in self.test if s.mask.any()]


@dataclass(frozen=True)
class GeneratedSet:
    name: str
    """The generator's name (``generator.json``), or the folder name."""
    path: Path
    samples: list[Sample]


def read_image(path: Path, sample_id: str) -> np.ndarray:
    """An image file as ``uint8`` RGB, or ``H x W`` when it is grey; a bad file raises ``RecordFileError`` naming it."""
    image = decode_image(read_verified(path, None, sample_id), sample_id, path)
    return np.asarray(image) if image.mode == "L" else to_rgb_array(image)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``H x W x 3`` view of a sample's image (a grey one repeated into three channels)."""
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def no_mask(shape: tuple[int, ...]) -> np.ndarray:
    """The all-zero mask of a normal image: a read-only ``H x W`` view of a single byte."""
    return np.broadcast_to(np.zeros((), np.uint8), shape[:2])


def image_paths(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted; none when it is not a folder."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) if folder.is_dir() else []


def normal_sample(path: Path, sample_id: str) -> Sample:
    """A defect-free image, with its all-zero mask."""
    image = read_image(path, sample_id)
    return Sample(sample_id, image, no_mask(image.shape))


def masked_sample(path: Path, sample_id: str, mask_path: Path, defect: str) -> Sample:
    """A defective image with its mask file (bright = anomaly), which must have the image's size."""
    image, mask = read_image(path, sample_id), read_mask(mask_path, threshold=127)
    if mask.shape != image.shape[:2]:
        raise EvaluationDataError(f"{sample_id}: mask {mask_path} is {mask.shape[::-1]}, image {image.shape[1::-1]}")
    return Sample(sample_id, image, mask, defect)


def split_normals(ids: list[str], train_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """A fixed, seeded split of normal image ids into (train, test)."""
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(train_fraction * len(ids)))
    ids = sorted(ids)
    return {ids[i] for i in order[:n_train]}, {ids[i] for i in order[n_train:]}


def mvtec_layout_set(root: Path) -> EvaluationSet:
    """One category of a folder in MVTec AD's layout (a user's own data, or a published one):
    train = ``train/good``; test = ``test/good`` (empty masks) + ``test/<defect>/*`` with
    ``ground_truth/<defect>/<stem>_mask.png`` (0/255, binarised at 128)."""
    root = Path(root)
    if not (root / "train" / "good").is_dir() or not (root / "test").is_dir():
        found = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir()) if root.is_dir() else []
        hint = f"; categories found in it: {', '.join(found)} (pass one of them)" if found else ""
        raise EvaluationDataError(f"{root} is not a category folder in MVTec AD's layout (train/good, test/, ground_truth/){hint}")

    def sample(path: Path, mask_path: Path | None) -> Sample:
        sample_id = f"{root.name}/{path.relative_to(root).as_posix()}"
        if mask_path is None:
            return normal_sample(path, sample_id)
        if not mask_path.is_file():
            raise EvaluationDataError(f"{sample_id}: its mask {mask_path} is missing")
        return masked_sample(path, sample_id, mask_path, mask_path.parent.name)

    train = [sample(p, None) for p in image_paths(root / "train" / "good")]
    test = []
    for folder in sorted(d for d in (root / "test").iterdir() if d.is_dir()):
        for path in image_paths(folder):
            mask_path = None if folder.name == "good" else root / "ground_truth" / folder.name / f"{path.stem}_mask.png"
            test.append(sample(path, mask_path))
    if not train or not any(s.mask.any() for s in test):
        raise EvaluationDataError(f"{root}: {len(train)} training normals and {len(test)} test images, none anomalous")
    return EvaluationSet(root.name, train, test)


ANOMALIB_FOLDERS = ("normal", "abnormal", "mask", "normal_test")


def anomalib_folder_set(root: Path, train_fraction: float = TRAIN_FRACTION, seed: int = SPLIT_SEED) -> EvaluationSet:
    """A folder in anomalib's ``Folder`` layout (what ``daad export --format anomalib-folder`` writes):
    ``normal/`` (defect-free), ``abnormal/`` (defective; files, or one sub-folder per defect type)
    and ``mask/`` (the same stems, and sub-folders, as ``abnormal/``; bright = anomaly), read by
    anomalib as ``Folder(normal_dir="normal", abnormal_dir="abnormal", mask_dir="mask")``.
    Test normals: ``normal_test/`` when present, otherwise a seeded ``1 - train_fraction`` of
    ``normal/`` (anomalib's own default holds out 20 % the same way)."""
    root = Path(root)
    missing = [d for d in ANOMALIB_FOLDERS[:3] if not (root / d).is_dir()]
    if missing:
        raise EvaluationDataError(f"{root} is not in anomalib's Folder layout: no {', '.join(f'{d}/' for d in missing)} in it "
                                  f"(expected {', '.join(f'{d}/' for d in ANOMALIB_FOLDERS)} (optional))")

    def sample_id(path: Path) -> str:
        return f"{root.name}/{path.relative_to(root).as_posix()}"

    def anomaly(path: Path, defect: str) -> Sample:
        folder = root / "mask" / path.parent.relative_to(root / "abnormal")
        masks = sorted(m for m in folder.glob(f"{path.stem}.*") if m.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not masks:
            raise EvaluationDataError(f"{sample_id(path)}: no mask {folder / path.stem}.<png|jpg|bmp|...> for it")
        return masked_sample(path, sample_id(path), masks[0], defect)

    normals = image_paths(root / "normal")
    if (root / "normal_test").is_dir():
        train, test_normals = normals, image_paths(root / "normal_test")
    else:
        train_ids, _ = split_normals([p.name for p in normals], train_fraction, seed)
        train, test_normals = [p for p in normals if p.name in train_ids], [p for p in normals if p.name not in train_ids]
    anomalies = [anomaly(p, "abnormal") for p in image_paths(root / "abnormal")]
    for folder in sorted(d for d in (root / "abnormal").iterdir() if d.is_dir()):
        anomalies += [anomaly(p, folder.name) for p in image_paths(folder)]
    if not train or not anomalies:
        raise EvaluationDataError(f"{root}: {len(train)} training normals and {len(anomalies)} defective images")
    return EvaluationSet(root.name, [normal_sample(p, sample_id(p)) for p in train],
                         anomalies + [normal_sample(p, sample_id(p)) for p in test_normals])


def load_generated(path: Path, targets: set[str] | None = None) -> GeneratedSet:
    """The rows of a generated dataset folder (see :mod:`daad.synthesis.output`); only those made from
    ``targets`` when any row was (one folder made for every category of a dataset serves each).
    Images whose three channels are equal are kept grey."""
    path = Path(path)
    if not path.is_dir():
        raise EvaluationDataError(f"generated dataset {path} is not a folder")
    if targets:
        made = {row["target_id"] for row in rows_made_from_table(path)}
        targets = targets if made & targets else None
    samples = [Sample(row["id"], _grey_if_equal(row["image"]), row["mask"]) for row in read_generated(path, targets)]
    if not samples:
        raise EvaluationDataError(f"generated dataset {path} has no rows")
    try:
        name = generator_info(path)["generator"]
    except FileNotFoundError:
        name = path.name
    return GeneratedSet(name, path, samples)


def _grey_if_equal(image: np.ndarray) -> np.ndarray:
    return image[..., 0].copy() if image.ndim == 3 and (image[..., :1] == image[..., 1:]).all() else image


def rows_made_from_table(path: Path) -> list[dict]:
    """The provenance columns (``id``, ``target_id``, ``source_ids``) of every row of generated dataset ``path``."""
    return [row for shard in sorted((Path(path) / "data").glob("*.parquet"))
            for row in pq.read_table(shard, columns=["id", "target_id", "source_ids"]).to_pylist()]


def rows_made_from(path: Path, ids: set[str]) -> list[str]:
    """The rows of generated dataset ``path`` whose target or real anomalies are among ``ids``
    (read from the provenance columns alone)."""
    return [row["id"] for row in rows_made_from_table(path) if row["target_id"] in ids or ids.intersection(row["source_ids"])]
