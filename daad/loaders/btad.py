"""BTAD (BeanTech Anomaly Detection): three industrial products.

Published layout (``BTech_Dataset_transformed``): ``<product>/train/ok``,
``<product>/test/ok`` (defect-free), ``<product>/test/ko/NNNN.<ext>`` (defective) and
``<product>/ground_truth/ko/NNNN.png`` (0/255). Products ``01`` and ``02`` publish
PNG images, ``03`` BMP images with PNG masks. Ids ``btad/<product>/NNNN``; native label
``<product>/ko`` (no defect type is published).

License:
    CC BY-SA 4.0 (https://github.com/pankajmishra000/VT-ADL).

Reference:
    Mishra, P., Verk, R., Fornasier, D., Piciarelli, C., Foresti, G. L. "VT-ADL: A Vision
    Transformer Network for Image Anomaly Detection and Localization." ISIE 2021.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daad.annotations.bitmap import read_mask
from daad.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "btad"
PRODUCTS = ("01", "02", "03")
IMG_EXTENSIONS = (".png", ".bmp", ".jpg")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS) if folder.is_dir() else []


def _products(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "test").is_dir())


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per ``test/ko`` image with its ``ground_truth/ko`` PNG mask."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for product in _products(root):
        for image_path in _images(product / "test" / "ko"):
            native_id = f"{product.name}/{image_path.stem}"
            mask_path = product / "ground_truth" / "ko" / f"{image_path.stem}.png"
            if not mask_path.is_file():
                yield Skipped(f"{ORIGIN}/{native_id}", image_path, "no_annotation", f"{mask_path} missing")
                continue
            yield record_or_skip(entry, native_id, f"{product.name}/ko", image_path, root,
                                 read_mask(mask_path, threshold=127), mask_path=mask_path, split="test")


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """``train/ok`` and ``test/ok`` of every product."""
    root = Path(root)
    for product in _products(root):
        for split in ("train", "test"):
            for image_path in _images(product / split / "ok"):
                yield NormalImage(f"{ORIGIN}/{product.name}/{split}/{image_path.stem}", image_path, split)
