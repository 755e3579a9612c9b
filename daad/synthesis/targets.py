"""Target normal images for the generators: a folder of images, or an origin's normals."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from daad.images import decode_image, read_verified, to_rgb_array
from daad.synthesis.base import Target

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def resize(image: np.ndarray, size: int | None) -> np.ndarray:
    """Resize to ``size x size`` (the authors' working resolution); ``None`` keeps the native size."""
    if size is None or image.shape[:2] == (size, size):
        return image
    interp = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def load_targets(items: Iterable[tuple[str, Path]], size: int | None = 256, licence: str = "unknown") -> Iterator[Target]:
    """``(id, path)`` pairs as RGB targets at the working resolution."""
    for target_id, path in items:
        image = to_rgb_array(decode_image(read_verified(Path(path), None, target_id), target_id, path))
        yield Target(target_id, resize(image, size), licence)


def folder_items(folder: Path) -> list[tuple[str, Path]]:
    """Every image under ``folder`` (sorted), with its relative path as id."""
    folder = Path(folder)
    return [
        (f"{folder.name}/{p.relative_to(folder).as_posix()}", p)
        for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]


def origin_items(origin: str, root: Path) -> list[tuple[str, Path]]:
    """The normal images of a registry origin, through its loader."""
    from daad.loaders import get_loader

    return [(n.id, n.path) for n in get_loader(origin).iter_normals(Path(root))]


class TargetFiles(Sequence[Target]):
    """Target images as ``(id, path)`` pairs, each read (and resized) when first used: what a
    worker on another machine is handed instead of the pixels (it reads the files itself)."""

    CACHE = 64
    """Targets kept decoded per process (a generator such as NSA reads other targets too)."""

    def __init__(self, items: Sequence[tuple[str, Path]], size: int | None = 256, licence: str = "unknown") -> None:
        self.items = [(str(i), Path(p)) for i, p in items]
        self.size = size
        self.licence = licence
        self._cache: dict[int, Target] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]
        if index not in self._cache:
            if len(self._cache) >= self.CACHE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = next(load_targets([self.items[index]], self.size, self.licence))
        return self._cache[index]

    def __getstate__(self) -> dict:
        return {"items": self.items, "size": self.size, "licence": self.licence, "_cache": {}}

    @property
    def ids(self) -> list[str]:
        return [i for i, _ in self.items]
