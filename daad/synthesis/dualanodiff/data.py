"""Training data: (whole anomaly image I, anomaly part I_a = I × M_a, background I_b = (1 − M_f) × I).

Pairs come from a registry view (few-shot real anomalies of one defect, through a recorded
:class:`FewShotSplit`) or from a generated dataset folder (cross-domain pairs, e.g. CAI
output). :func:`prepare` resizes them once into ``[-1, 1]`` tensors; latents of all three
images are scaled by the VAE's scaling factor (:meth:`BaseModel.encode_images`), including
the background, which the authors' public code leaves unscaled.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from daad.errors import DaadError
from daad.licences import UNKNOWN
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.output import read_generated


class TrainingDataError(DaadError):
    """The training pairs cannot be used (none, empty mask, mixed classes)."""


@dataclass(frozen=True)
class TrainingPair:
    id: str
    image: np.ndarray
    """``H x W x 3`` ``uint8`` RGB anomaly image I."""
    mask: np.ndarray
    """``H x W`` 0/1 anomaly mask M_a."""
    anomaly_class: str | None
    licence: str = UNKNOWN
    """The licence of a registry record; of a generated row, see ``source_licences``."""
    source_ids: tuple[str, ...] = ()
    """Ids of the real images behind this pair: itself for a registry record; the real
    anomalies and the target normal image for a generated row."""
    source_licences: Mapping[str, str] = field(default_factory=dict)
    """Licence of each source id (ids missing here take ``licence``)."""

    def licences(self) -> dict[str, str]:
        """Each source id with its licence."""
        return {s: self.source_licences.get(s, self.licence) for s in self.source_ids}


@dataclass(frozen=True)
class FewShotSplit:
    """The paper's split: the first third of each native defect type (by id) trains, the rest is held out.

    Few-shot training on an evaluation dataset uses only ``train_ids``; the generated data
    are then leak-free for evaluation on ``held_out_ids`` only, which the checkpoint and the
    generated dataset's parameters record (``evaluation`` names that dataset).
    """

    train_ids: tuple[str, ...]
    held_out_ids: tuple[str, ...]
    evaluation: str = "none"
    rule: str = "first ceil(n/3) records of each native label, ordered by id"

    @classmethod
    def first_third(cls, records: Iterable, evaluation: str = "none") -> FewShotSplit:
        groups: dict[str, list] = defaultdict(list)
        for record in records:
            groups[record.native_label].append(record.id)
        train, held = [], []
        for ids in groups.values():
            ids.sort()
            cut = math.ceil(len(ids) / 3)
            train += ids[:cut]
            held += ids[cut:]
        return cls(tuple(sorted(train)), tuple(sorted(held)), evaluation)

    def to_json(self) -> dict:
        return {
            "rule": self.rule,
            "evaluation": self.evaluation,
            "train_ids": list(self.train_ids),
            "held_out_ids": list(self.held_out_ids),
        }


def pairs_from_view(view, split: FewShotSplit | None = None) -> list[TrainingPair]:
    """Registry records of ``view`` as pairs (only ``split.train_ids`` when a split is given)."""
    records = list(view)
    if split is not None:
        keep = set(split.train_ids)
        records = [r for r in records if r.id in keep]
    pairs = [
        TrainingPair(r.id, view.read_image(r), view.read_mask(r), r.anomaly_class, r.licence, (r.id,)) for r in records
    ]
    return _checked(pairs, str(view.describe()))


def pairs_from_generated(
    path: Path, anomaly_class: str | None = None, licences: Callable[[set[str]], Mapping[str, str]] | None = None
) -> list[TrainingPair]:
    """Rows of a generated dataset folder (e.g. CAI output) as pairs, only ``anomaly_class``'s when given.

    A pair's sources are the row's real anomalies and its target image; ``licences`` gives
    those ids' licences (e.g. :func:`registry_licences`; none, or ids it lacks: ``unknown``).
    """
    rows = [
        (row, tuple(dict.fromkeys((*row["source_ids"], *([row["target_id"]] if row["target_id"] else [])))))
        for row in read_generated(Path(path))
        if anomaly_class is None or row["anomaly_class"] == anomaly_class
    ]
    known = dict(licences({s for _, sources in rows for s in sources})) if licences and rows else {}
    pairs = [
        TrainingPair(
            row["id"], row["image"], row["mask"], row["anomaly_class"], UNKNOWN, sources,
            {s: known.get(s, UNKNOWN) for s in sources},
        )
        for row, sources in rows
    ]
    return _checked(pairs, f"{path} (class {anomaly_class})" if anomaly_class else str(path))


def registry_licences(registry, ids: set[str]) -> dict[str, str]:
    """Licences of ``ids``: a registry record's own, else (a target normal image) the catalogue
    licence of the origin the id starts with, else ``unknown``."""
    catalogue = registry.catalogue
    origins = sorted({i.split("/", 1)[0] for i in ids} & set(catalogue.entries))
    found = {r.id: r.licence for r in registry.records(origins) if r.id in ids} if origins else {}
    for i in ids - found.keys():
        origin = i.split("/", 1)[0]
        found[i] = catalogue[origin].licence if origin in catalogue else UNKNOWN
    return found


def _checked(pairs: list[TrainingPair], where: str) -> list[TrainingPair]:
    if not pairs:
        raise TrainingDataError(f"no training pairs in {where}")
    for pair in pairs:
        if not pair.mask.any():
            raise TrainingDataError(f"training pair {pair.id} has an empty anomaly mask")
    classes = {p.anomaly_class for p in pairs}
    if len(classes) > 1:
        raise TrainingDataError(f"training pairs from {where} mix classes {sorted(map(str, classes))}; train one model per class")
    return pairs


@dataclass
class PairTensors:
    """Resized training images in ``[-1, 1]``, ``N x 3 x R x R`` each."""

    whole: torch.Tensor
    part: torch.Tensor
    background: torch.Tensor


def to_tensor(image: np.ndarray, resolution: int) -> torch.Tensor:
    """``uint8`` RGB -> ``3 x R x R`` float in ``[-1, 1]``."""
    resized = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(resized).permute(2, 0, 1).float() / 127.5 - 1


def prepare(pairs: Sequence[TrainingPair], resolution: int, foreground: ForegroundExtractor) -> PairTensors:
    """I, I_a = I × M_a and I_b = (1 − M_f) × I for every pair, resized to ``resolution``."""
    whole, part, background = [], [], []
    for pair in pairs:
        image = pair.image
        whole.append(to_tensor(image, resolution))
        part.append(to_tensor(image * pair.mask.astype(bool)[..., None], resolution))
        background.append(to_tensor(background_image(pair.id, image, foreground), resolution))
    return PairTensors(torch.stack(whole), torch.stack(part), torch.stack(background))


def background_image(target_id: str, image: np.ndarray, foreground: ForegroundExtractor) -> np.ndarray:
    """I_b = (1 − M_f) × I of a target normal image (the BCM condition at sampling)."""
    return image * (1 - foreground(target_id, image))[..., None]


def random_flips(images: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """The same random horizontal and (independently) vertical flip of row ``i`` of every batch
    in ``images`` (``B x C x H x W``), each with probability 1/2, so a pair's images stay aligned."""
    out = list(images)
    for dim in (-1, -2):
        flip = (torch.rand(out[0].shape[0], generator=generator) < 0.5).view(-1, 1, 1, 1)
        out = [torch.where(flip, x.flip(dim), x) for x in out]
    return out
