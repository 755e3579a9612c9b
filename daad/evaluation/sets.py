"""The named evaluation sets: every dataset daad has a loader for that publishes normal images, plus a
user's own folder in MVTec AD's or anomalib's ``Folder`` layout.

A published dataset is an evaluation set by data alone, a row of :data:`LOADER_SETS`: its loader
(:func:`daad.loaders.get_loader`) yields the real anomalies (records with their masks) and the
normal images (with the split the release gives them); the row says how they split and where a
category is named in the ids. Splits:

- ``official``: normals of the release's ``train`` split train; normals and anomalies of its
  ``test`` split are scored (MVTec AD, MPDD, BTAD, MVTec LOCO: ``train``/``test`` folders; VisA:
  ``split_csv/1cls.csv``; KSDD2: ``train/``/``test/``; DAGM 2007: ``Train``/``Test``). Items of
  other splits (KSDD2's and DAGM's training defects, LOCO's validation normals) are left out and
  counted, never trained on.
- ``seeded`` (KolektorSDD, MTD, BSData publish no split): a fixed ``TRAIN_FRACTION`` (80 %) of
  the normals, drawn with ``SPLIT_SEED`` over the sorted ids (:func:`split_normals`), trains;
  the other normals and every anomaly are scored.

Each category (``mvtec_ad/bottle``, ``visa/pcb1``, ``dagm2007/Class3`` ...) is its own set, as the
papers report them; :func:`evaluation_sets` yields them one at a time so that only one category's
images are in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daad.evaluation.data import (
    SPLIT_SEED, TRAIN_FRACTION, EvaluationDataError, EvaluationSet, Sample, anomalib_folder_set, mvtec_layout_set,
    normal_sample, read_image, split_normals,
)
from daad.loaders import get_loader
from daad.loaders.base import NormalImage, Skipped
from daad.record import Record


@dataclass(frozen=True, slots=True)
class LoaderSet:
    """How one published dataset becomes evaluation sets."""

    split: Literal["official", "seeded"]
    category_depth: int
    """How many id parts after the origin name a category (0: the dataset is one set)."""
    note: str


LOADER_SETS: dict[str, LoaderSet] = {
    "mvtec_ad": LoaderSet("official", 1, "15 categories; train/good trains, test/* scores"),
    "mpdd": LoaderSet("official", 1, "6 categories; train/good trains, test/* scores"),
    "btad": LoaderSet("official", 1, "3 products; train/ok trains, test/{ok,ko} scores"),
    "mvtec_loco": LoaderSet("official", 1, "5 categories; train/good trains, test/* scores (validation/good unused)"),
    "visa": LoaderSet("official", 1, "12 categories; split_csv/1cls.csv: its train normals train, its test rows score"),
    "ksdd2": LoaderSet("official", 0, "train/ normals train (its defective train images unused), test/ scores"),
    "dagm2007": LoaderSet("official", 1, "10 classes; Train normals train (Train defects unused), Test scores; weak ellipse masks"),
    "kolektorsdd": LoaderSet("seeded", 0, "no published split: a seeded 80 % of the normals trains"),
    "mtd": LoaderSet("seeded", 0, "no published split: a seeded 80 % of MT_Free trains"),
    "bsdata": LoaderSet("seeded", 0, "no published split: a seeded 80 % of the unlabelled (normal) images trains"),
}
USER_SETS: dict[str, Callable[[Path], EvaluationSet]] = {"mvtec-layout": mvtec_layout_set, "anomalib-folder": anomalib_folder_set}
"""A user's own folder: ``--root`` is one category in MVTec AD's layout, or an anomalib Folder root."""
EVALUATION_SETS: tuple[str, ...] = (*LOADER_SETS, *USER_SETS)


@dataclass(frozen=True)
class EvaluationIndex:
    """A dataset's items, split, before any image is decoded (masks are the records' RLE)."""

    name: str
    root: Path
    train: list[NormalImage]
    test_normals: list[NormalImage]
    anomalies: list[list[Record]]
    """The records of each defective test image (VisA splits an image's mask into one record per defect)."""
    skipped: dict[str, int]
    """Items that cannot be scored (``no_annotation``, ``empty_mask`` ...) and, as ``other_split``, items
    of a split that neither trains nor scores."""

    def categories(self) -> list[str]:
        return sorted({category_of(self.name, i.id) for i in [*self.train, *self.test_normals, *(g[0] for g in self.anomalies)]})


def _table_row(name: str) -> LoaderSet:
    if name not in LOADER_SETS:
        raise EvaluationDataError(f"unknown evaluation dataset {name!r}; known: {', '.join(EVALUATION_SETS)}")
    return LOADER_SETS[name]


def category_of(name: str, item_id: str) -> str:
    """The category an item id names (``mvtec_ad/bottle/test/000`` -> ``bottle``); empty for a one-set dataset."""
    depth = LOADER_SETS[name].category_depth
    return "/".join(item_id.split("/")[1 : 1 + depth])


def _split(name: str, normals: list[NormalImage]) -> tuple[list[NormalImage], list[NormalImage], int]:
    """(train, test, left out) normals."""
    if _table_row(name).split == "seeded":
        train_ids, _ = split_normals([n.id for n in normals], TRAIN_FRACTION, SPLIT_SEED)
        return [n for n in normals if n.id in train_ids], [n for n in normals if n.id not in train_ids], 0
    train = [n for n in normals if n.split == "train"]
    test = [n for n in normals if n.split == "test"]
    return train, test, len(normals) - len(train) - len(test)


def normal_split(name: str, root: Path) -> tuple[set[str], set[str]]:
    """The (train, not train) ids of evaluation dataset ``name``'s normal images, read without decoding one."""
    normals = list(get_loader(name).iter_normals(Path(root)))
    train_ids = {n.id for n in _split(name, normals)[0]}
    return train_ids, {n.id for n in normals} - train_ids


def index(name: str, root: Path) -> EvaluationIndex:
    """Read dataset ``name`` at ``root`` through its loader and split it (no pixel kept but the masks' RLE)."""
    row, root = _table_row(name), Path(root)
    if not root.is_dir():
        raise EvaluationDataError(f"{name}: root {root} is not a folder (pass --root {name}=PATH, the dataset as published)")
    loader = get_loader(name)
    skipped: Counter[str] = Counter()
    anomalies = []
    for item in loader.iter_records(root):
        if isinstance(item, Skipped):
            skipped[item.reason] += 1
        elif row.split == "seeded" or item.split == "test":
            anomalies.append(item)
        else:
            skipped["other_split"] += 1
    by_image: dict[str, list[Record]] = {}
    for record in anomalies:
        by_image.setdefault(record.image.path, []).append(record)
    train, test_normals, left_out = _split(name, list(loader.iter_normals(root)))
    if left_out:
        skipped["other_split"] += left_out
    if not train or not anomalies:
        raise EvaluationDataError(f"{name} at {root}: {len(train)} training normals and {len(anomalies)} test anomalies "
                                  f"(skipped: {dict(skipped) or 'none'}); is it the dataset as its authors publish it?")
    return EvaluationIndex(name, root, train, test_normals, list(by_image.values()), dict(skipped))


def _anomaly_sample(ix: EvaluationIndex, records: list[Record]) -> Sample:
    """One defective test image: the union of its records' masks, its defect types joined by commas."""
    first = records[0]
    parts = [r.id.split("/") for r in records]
    sample_id = "/".join(p for p, *rest in zip(*parts) if all(q == p for q in rest))  # the records' common id
    category = category_of(ix.name, first.id)
    defect = ",".join(sorted({r.native_label.removeprefix(f"{category}/") if category else r.native_label for r in records}))
    image = read_image(ix.root / first.image.path, sample_id)
    mask = first.mask.decode()
    for r in records[1:]:
        mask |= r.mask.decode()
    if mask.shape != image.shape[:2]:
        raise EvaluationDataError(f"{sample_id}: mask is {mask.shape[::-1]}, image {image.shape[1::-1]} ({ix.root / first.image.path})")
    return Sample(sample_id, image, mask, defect)


def evaluation_sets(name: str, root: Path, categories: Sequence[str] | None = None) -> Iterator[EvaluationSet]:
    """One evaluation set per category of dataset ``name`` (all, or those named), decoded one at a time."""
    if name in USER_SETS:
        if categories:
            raise EvaluationDataError(f"{name}: --root is one category already; --category does not apply")
        yield USER_SETS[name](Path(root))
        return
    ix = index(name, root)
    known = ix.categories()
    unknown = sorted(set(categories or ()) - set(known))
    if unknown:
        raise EvaluationDataError(f"{name} has no categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                                  f"its categories: {', '.join(known) or '(one set, no category)'}")
    for category in categories or known:
        def mine(items):
            return [i for i in items if category_of(name, i.id) == category]

        train = mine(ix.train)
        anomalies = [g for g in ix.anomalies if category_of(name, g[0].id) == category]
        set_name = f"{name}/{category}" if category else name
        if not train or not anomalies:
            raise EvaluationDataError(f"{set_name}: {len(train)} training normals and {len(anomalies)} test anomalies")
        yield EvaluationSet(
            set_name,
            [normal_sample(n.path, n.id) for n in train],
            [_anomaly_sample(ix, r) for r in anomalies] + [normal_sample(n.path, n.id) for n in mine(ix.test_normals)],
            skipped=ix.skipped,
        )


def load_evaluation_set(name: str, root: Path, category: str | None = None) -> EvaluationSet:
    """One evaluation set: a one-set dataset, one category of a dataset, or a user's folder."""
    if name not in EVALUATION_SETS:
        raise EvaluationDataError(f"unknown evaluation dataset {name!r}; known: {', '.join(EVALUATION_SETS)}")
    if name in LOADER_SETS and LOADER_SETS[name].category_depth and category is None:
        known = index(name, root).categories()
        raise EvaluationDataError(f"{name} has {len(known)} categories; name one ({', '.join(known)})")
    return next(evaluation_sets(name, root, [category] if category else None))


def kolektorsdd_set(root: Path) -> EvaluationSet:
    """KolektorSDD: a seeded 80 % of the defect-free images trains; every defective image and the rest score."""
    return load_evaluation_set("kolektorsdd", root)
