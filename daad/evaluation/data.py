"""What the detector is trained and scored on: an evaluation dataset and generated datasets.

An :class:`EvaluationSet` holds the evaluation dataset's normal training images and its
test images (real anomalies with masks, plus held-out normals with empty masks), read
through the dataset's loader. A generated dataset (the folder a generator writes) gives
the synthetic anomaly rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from daad.errors import DaadError
from daad.images import decode_image, read_verified, to_rgb_array
from daad.annotations.bitmap import read_mask
from daad.loaders import kolektorsdd
from daad.loaders.base import Skipped
from daad.synthesis.output import generator_info, read_generated
from daad.synthesis.targets import IMAGE_SUFFIXES

KOLEKTORSDD_TRAIN_FRACTION = 0.8
SPLIT_SEED = 0


class EvaluationDataError(DaadError):
    """An evaluation or generated dataset cannot be used (missing, empty, unreadable); names it."""


@dataclass(frozen=True, slots=True)
class Sample:
    id: str
    image: np.ndarray
    """``H x W x 3`` ``uint8`` RGB."""
    mask: np.ndarray
    """``H x W`` ``uint8`` 0/1; all zero for a normal image."""


@dataclass(frozen=True)
class EvaluationSet:
    name: str
    train_normals: list[Sample]
    test: list[Sample]
    """Real anomalies and held-out normals."""

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
    """An image file as ``uint8`` RGB; a bad file raises ``RecordFileError`` naming it."""
    return to_rgb_array(decode_image(read_verified(path, None, sample_id), sample_id, path))


def split_normals(ids: list[str], train_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """A fixed, seeded split of normal image ids into (train, test)."""
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(train_fraction * len(ids)))
    ids = sorted(ids)
    return {ids[i] for i in order[:n_train]}, {ids[i] for i in order[n_train:]}


def kolektorsdd_split(root: Path, train_fraction: float = KOLEKTORSDD_TRAIN_FRACTION, seed: int = SPLIT_SEED) -> tuple[set[str], set[str]]:
    """KolektorSDD's defect-free image ids as (train, test): a fixed, seeded ``train_fraction``."""
    return split_normals([n.id for n in kolektorsdd.iter_normals(Path(root))], train_fraction, seed)


def kolektorsdd_set(root: Path, train_fraction: float = KOLEKTORSDD_TRAIN_FRACTION, seed: int = SPLIT_SEED) -> EvaluationSet:
    """KolektorSDD: train = a fixed ``train_fraction`` of the defect-free images; test = every defective image + the rest."""
    root = Path(root)
    records = list(kolektorsdd.iter_records(root))
    skipped = [r for r in records if isinstance(r, Skipped)]
    if skipped:
        raise EvaluationDataError(f"KolektorSDD at {root}: {len(skipped)} items unreadable, first {skipped[0].id}: {skipped[0].detail}")
    normals = list(kolektorsdd.iter_normals(root))
    if not records or not normals:
        raise EvaluationDataError(f"KolektorSDD at {root}: found {len(records)} defective and {len(normals)} normal images")
    train_ids, _ = kolektorsdd_split(root, train_fraction, seed)

    def normal_sample(n) -> Sample:
        image = read_image(n.path, n.id)
        return Sample(n.id, image, np.zeros(image.shape[:2], np.uint8))

    anomalies = [Sample(r.id, read_image(root / r.image.path, r.id), r.mask.decode()) for r in records]
    train = [normal_sample(n) for n in normals if n.id in train_ids]
    test_normals = [normal_sample(n) for n in normals if n.id not in train_ids]
    return EvaluationSet("kolektorsdd", train, anomalies + test_normals)


def mvtec_layout_set(root: Path) -> EvaluationSet:
    """One category of a folder in MVTec AD's layout (a user's own data, or a published one):
    train = ``train/good``; test = ``test/good`` (empty masks) + ``test/<defect>/*`` with
    ``ground_truth/<defect>/<stem>_mask.png`` (0/255, binarised at 128)."""
    root = Path(root)
    if not (root / "train" / "good").is_dir() or not (root / "test").is_dir():
        found = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir()) if root.is_dir() else []
        hint = f"; categories found in it: {', '.join(found)} (pass one of them)" if found else ""
        raise EvaluationDataError(f"{root} is not a category folder in MVTec AD's layout (train/good, test/, ground_truth/){hint}")

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    def sample(path: Path, mask_path: Path | None) -> Sample:
        sample_id = f"{root.name}/{path.relative_to(root).as_posix()}"
        image = read_image(path, sample_id)
        if mask_path is None:
            return Sample(sample_id, image, np.zeros(image.shape[:2], np.uint8))
        if not mask_path.is_file():
            raise EvaluationDataError(f"{sample_id}: its mask {mask_path} is missing")
        mask = read_mask(mask_path, threshold=127)
        if mask.shape != image.shape[:2]:
            raise EvaluationDataError(f"{sample_id}: mask {mask_path} is {mask.shape[::-1]}, image {image.shape[1::-1]}")
        return Sample(sample_id, image, mask)

    train = [sample(p, None) for p in images(root / "train" / "good")]
    test = []
    for folder in sorted(d for d in (root / "test").iterdir() if d.is_dir()):
        for path in images(folder):
            mask_path = None if folder.name == "good" else root / "ground_truth" / folder.name / f"{path.stem}_mask.png"
            test.append(sample(path, mask_path))
    if not train or not any(s.mask.any() for s in test):
        raise EvaluationDataError(f"{root}: {len(train)} training normals and {len(test)} test images, none anomalous")
    return EvaluationSet(root.name, train, test)


EVALUATION_SETS: dict[str, Callable[[Path], EvaluationSet]] = {"kolektorsdd": kolektorsdd_set, "mvtec-layout": mvtec_layout_set}
NORMAL_SPLITS: dict[str, Callable[[Path], tuple[set[str], set[str]]]] = {"kolektorsdd": kolektorsdd_split}
"""Each evaluation dataset's (train, test) normal ids, read without decoding an image."""


def normal_split(name: str, root: Path) -> tuple[set[str], set[str]]:
    """The (train, test) ids of evaluation dataset ``name``'s normal images."""
    if name not in NORMAL_SPLITS:
        raise EvaluationDataError(f"unknown evaluation dataset {name!r}; known: {', '.join(sorted(NORMAL_SPLITS))}")
    return NORMAL_SPLITS[name](root)


def load_evaluation_set(name: str, root: Path) -> EvaluationSet:
    if name not in EVALUATION_SETS:
        raise EvaluationDataError(f"unknown evaluation dataset {name!r}; known: {', '.join(sorted(EVALUATION_SETS))}")
    return EVALUATION_SETS[name](root)


def load_generated(path: Path) -> GeneratedSet:
    """The rows of a generated dataset folder (see :mod:`daad.synthesis.output`)."""
    path = Path(path)
    if not path.is_dir():
        raise EvaluationDataError(f"generated dataset {path} is not a folder")
    samples = [Sample(row["id"], row["image"], row["mask"]) for row in read_generated(path)]
    if not samples:
        raise EvaluationDataError(f"generated dataset {path} has no rows")
    try:
        name = generator_info(path)["generator"]
    except FileNotFoundError:
        name = path.name
    return GeneratedSet(name, path, samples)


def rows_made_from(path: Path, ids: set[str]) -> list[str]:
    """The rows of generated dataset ``path`` whose target or real anomalies are among ``ids``
    (read from the provenance columns alone)."""
    leaked = []
    for shard in sorted((Path(path) / "data").glob("*.parquet")):
        table = pq.read_table(shard, columns=["id", "target_id", "source_ids"]).to_pylist()
        leaked += [row["id"] for row in table if row["target_id"] in ids or ids.intersection(row["source_ids"])]
    return leaked
