"""Magnetic Tile Defect (MTD): surface defects of magnetic tiles.

Published layout: ``MT_<Type>/Imgs/<name>.jpg`` with a same-name ``<name>.png`` mask
beside it (0/255), for the types Blowhole, Break, Crack, Fray, Uneven; ``MT_Free/Imgs``
holds the defect-free images (with all-zero masks). Ids ``mtd/<Type>/<name>``.

License:
    None published (https://github.com/abin24/Magnetic-tile-defect-datasets.); research
    use with citation. Recorded as ``unknown``.

Reference:
    Huang, Y., Qiu, C., Yuan, K. "Surface defect saliency of magnetic tile."
    The Visual Computer 36, 2020.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daad.annotations.bitmap import read_mask
from daad.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "mtd"
NATIVE_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
FREE = "Free"


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per image of the five defect folders, with its same-name PNG mask."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for folder in sorted(root.glob("MT_*")):
        native = folder.name.removeprefix("MT_")
        if native == FREE:
            continue
        for image_path in sorted((folder / "Imgs").glob("*.jpg")):
            native_id = f"{native}/{image_path.stem}"
            mask_path = image_path.with_suffix(".png")
            if not mask_path.is_file():
                yield Skipped(f"{ORIGIN}/{native_id}", image_path, "no_annotation", f"{mask_path} missing")
                continue
            yield record_or_skip(entry, native_id, native, image_path, root, read_mask(mask_path, threshold=127),
                                 mask_path=mask_path)


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """``MT_Free/Imgs/*.jpg``."""
    for image_path in sorted((Path(root) / f"MT_{FREE}" / "Imgs").glob("*.jpg")):
        yield NormalImage(f"{ORIGIN}/{FREE}/{image_path.stem}", image_path)
