"""KolektorSDD: surface cracks on electrical commutators.

399 grey images of about 500x1250 from 50 commutators, 52 with a visible defect
(cracks / fractures), 347 defect-free. Two published layouts are read:

- the original release, ``KolektorSDD.zip`` (https://go.vicos.si/kolektorsdd, pinned by
  sha256; origin ``kolektorsdd_original``): ``kosNN/PartK.jpg`` with a same-size
  ``PartK_label.bmp`` (non-zero = defect; an all-zero label is a defect-free image);
  ids ``kolektorsdd_original/kosNN/PartK``;
- the YOLO-seg conversion of https://github.com/stoy95536/KolektorSDD_Yolov8_Datasets
  (origin ``kolektorsdd``, ``derived_from`` the original in the catalogue):
  ``Datasets/images/{train,val}/NNN.jpg`` with ``Datasets/labels/{train,val}/NNN.txt``
  (normalised polygons, several per image; an empty file is a defect-free image);
  ids ``kolektorsdd/<split>/NNN``. The conversion renamed the files, so ids differ between
  the two origins; the same images are near copies of each other.

License:
    CC BY-NC-SA 4.0 (https://www.vicos.si/resources/kolektorsdd/).

Reference:
    Tabernik, D., Sela, S., Skvarc, J., Skocaj, D. "Segmentation-based deep-learning
    approach for surface-defect detection." Journal of Intelligent Manufacturing 31, 2020.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from daad.annotations.yolo_seg import YoloFormatError, rasterise, read_polygons
from daad.registry.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "kolektorsdd"
ORIGINAL = "kolektorsdd_original"
NATIVE_LABEL = "defect"
YOLO_DIR = "Datasets"
SPLITS = ("train", "val")


def is_yolo_layout(root: Path) -> bool:
    return (Path(root) / YOLO_DIR / "labels").is_dir()


def _yolo_items(root: Path) -> Iterator[tuple[str, Path, Path, str]]:
    for split in SPLITS:
        for image_path in sorted((root / YOLO_DIR / "images" / split).glob("*.jpg")):
            yield f"{split}/{image_path.stem}", image_path, root / YOLO_DIR / "labels" / split / f"{image_path.stem}.txt", split


def _original_items(root: Path) -> Iterator[tuple[str, Path, Path, None]]:
    for image_path in sorted(root.glob("kos*/Part*.jpg")):
        yield f"{image_path.parent.name}/{image_path.stem}", image_path, image_path.with_name(f"{image_path.stem}_label.bmp"), None


def _mask(image_path: Path, label_path: Path) -> np.ndarray | None:
    """The defect mask, or ``None`` for a defect-free image (empty label file, all-zero bitmap)."""
    if label_path.suffix == ".txt":
        polygons = read_polygons(label_path)
        if not polygons:
            return None
        with Image.open(image_path) as image:
            width, height = image.size
        return rasterise(polygons, width, height)
    with Image.open(label_path) as label:
        mask = (np.asarray(label.convert("L")) > 0).astype(np.uint8)
    return mask if mask.any() else None


def _items(root: Path):
    return _yolo_items(root) if is_yolo_layout(root) else _original_items(root)


def origin_of(root: Path) -> str:
    """The origin a KolektorSDD folder belongs to: the YOLO-seg re-release or the original."""
    return ORIGIN if is_yolo_layout(root) else ORIGINAL


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per defective image (the union of its polygons / its label bitmap)."""
    root = Path(root)
    entry = entry or catalogue_entry(origin_of(root))
    for native_id, image_path, label_path, split in _items(root):
        if not label_path.is_file():
            yield Skipped(f"{entry.id}/{native_id}", image_path, "no_annotation", f"{label_path} missing")
            continue
        try:
            mask = _mask(image_path, label_path)
        except YoloFormatError as exc:
            yield Skipped(f"{entry.id}/{native_id}", label_path, "bad_annotation", str(exc))
            continue
        if mask is None:
            continue  # a defect-free image: see iter_normals
        yield record_or_skip(entry, native_id, NATIVE_LABEL, image_path, root, mask, mask_path=label_path, split=split)


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """Defect-free images: empty YOLO label files, or all-zero label bitmaps."""
    root = Path(root)
    origin = origin_of(root)
    for native_id, image_path, label_path, split in _items(root):
        if label_path.is_file() and _mask(image_path, label_path) is None:
            yield NormalImage(f"{origin}/{native_id}", image_path, split)
