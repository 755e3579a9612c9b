"""MVTec AD: 15 categories of industrial objects and textures, 73 defect types.

Published layout (per category): ``<category>/train/good/NNN.png`` (defect-free),
``<category>/test/<type>/NNN.png`` (``good`` or a defect type) and
``<category>/ground_truth/<type>/NNN_mask.png`` (0/255). Records: one per defective
test image, id ``mvtec_ad/<category>/<type>/NNN``, native label ``<category>/<type>``.
The catalogue maps all 73 types; functional and logical ones (``bent_wire``,
``cable_swap``, ``misplaced`` ...) map to ``unmapped``.

License:
    CC BY-NC-SA 4.0 (https://www.mvtec.com/company/research/datasets/mvtec-ad);
    not for commercial use.

Reference:
    Bergmann, P., Batzner, K., Fauser, M., Sattlegger, D., Steger, C. "The MVTec Anomaly
    Detection Dataset: A Comprehensive Real-World Dataset for Unsupervised Anomaly
    Detection." IJCV 129, 2021.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daad.annotations.bitmap import read_mask
from daad.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "mvtec_ad"
CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)
IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
GOOD = "good"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS) if folder.is_dir() else []


def _categories(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if (p / "test").is_dir())


def iter_layout_records(root: Path, entry: SourceEntry) -> Iterator[Record | Skipped]:
    """The MVTec AD layout, shared by every dataset published in it (MPDD ...)."""
    root = Path(root)
    for category in _categories(root):
        for type_dir in sorted(p for p in (category / "test").iterdir() if p.is_dir() and p.name != GOOD):
            label = f"{category.name}/{type_dir.name}"
            for image_path in _images(type_dir):
                native_id = f"{label}/{image_path.stem}"
                mask_path = category / "ground_truth" / type_dir.name / f"{image_path.stem}_mask.png"
                if not mask_path.is_file():
                    yield Skipped(f"{entry.id}/{native_id}", image_path, "no_annotation", f"{mask_path} missing")
                    continue
                yield record_or_skip(entry, native_id, label, image_path, root, read_mask(mask_path, threshold=127),
                                     mask_path=mask_path, split="test")


def iter_layout_normals(root: Path, origin: str) -> Iterator[NormalImage]:
    root = Path(root)
    for category in _categories(root):
        for split in ("train", "test"):
            for image_path in _images(category / split / GOOD):
                yield NormalImage(f"{origin}/{category.name}/{split}/{image_path.stem}", image_path, split)


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per defective test image with its ground-truth mask."""
    return iter_layout_records(root, entry or catalogue_entry(ORIGIN))


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """``train/good`` and ``test/good`` of every category."""
    return iter_layout_normals(root, ORIGIN)
