"""The MVTec AD folder layout, shared by every dataset published in it (MVTec AD, MPDD, BTAD):
those sources have no module of their own; :class:`MvtecLoader` reads each from its catalogue entry
(licence, reference and notes are there too).

``<category>/train/<normal>/<stem>.<ext>`` (defect-free), ``<category>/test/<type>/<stem>.<ext>``
(``<normal>`` or a defect type) and ``<category>/ground_truth/<type>/<stem><mask suffix>.<mask ext>``
(bright pixels = anomaly). What differs between releases is data in the origin's catalogue
entry, ``[<origin>.layout]`` in ``manifests/sources.toml``:

- ``normal``: the defect-free folder name (MVTec AD ``good``, BTAD ``ok``);
- ``mask_suffix``: appended to the image stem (MVTec AD ``_mask``, BTAD none);
- ``mask_extensions``: tried in order (BTAD product 03 publishes ``.bmp`` masks, the others ``.png``).

Records: one per defective test image, id ``<origin>/<category>/<type>/<stem>``, native label
``<category>/<type>``; a test image without a mask is reported as skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

from daad.annotations.bitmap import read_mask
from daad.registry.catalogue import CatalogueError, SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

READER = "mvtec"
IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True, slots=True)
class MvtecLayout:
    """The parameters of one release's MVTec-style tree (defaults: MVTec AD's own)."""

    normal: str = "good"
    mask_suffix: str = "_mask"
    mask_extensions: tuple[str, ...] = (".png",)
    mask_threshold: int = 127

    @classmethod
    def of(cls, entry: SourceEntry) -> MvtecLayout:
        """The layout named in ``entry``'s ``[<origin>.layout]`` table; ``CatalogueError`` if it is not one."""
        params = dict(entry.layout or {})
        if params.pop("reader", None) != READER:
            raise CatalogueError(f"origin {entry.id!r}: its [layout] table does not name reader = {READER!r}")
        unknown = set(params) - {f.name for f in fields(cls)}
        if unknown:
            raise CatalogueError(f"origin {entry.id!r}: unknown layout key(s) {', '.join(sorted(unknown))}")
        if "mask_extensions" in params:
            params["mask_extensions"] = tuple(params["mask_extensions"])
        return cls(**params)

    def mask_of(self, category: Path, kind: str, stem: str) -> Path | None:
        """The ground-truth file of test image ``stem`` of type ``kind``, or ``None``."""
        folder = category / "ground_truth" / kind
        for ext in self.mask_extensions:
            path = folder / f"{stem}{self.mask_suffix}{ext}"
            if path.is_file():
                return path
        return None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS) if folder.is_dir() else []


def _categories(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if (p / "test").is_dir())


def iter_records(root: Path, entry: SourceEntry) -> Iterator[Record | Skipped]:
    """One record per defective test image with its ground-truth mask."""
    root = Path(root)
    layout = MvtecLayout.of(entry)
    for category in _categories(root):
        for type_dir in sorted(p for p in (category / "test").iterdir() if p.is_dir() and p.name != layout.normal):
            label = f"{category.name}/{type_dir.name}"
            for image_path in _images(type_dir):
                native_id = f"{label}/{image_path.stem}"
                mask_path = layout.mask_of(category, type_dir.name, image_path.stem)
                if mask_path is None:
                    yield Skipped(f"{entry.id}/{native_id}", image_path, "no_annotation",
                                  f"no {'/'.join(layout.mask_extensions)} mask for it in {category / 'ground_truth'}")
                    continue
                mask = read_mask(mask_path, threshold=layout.mask_threshold)
                yield record_or_skip(entry, native_id, label, image_path, root, mask, mask_path=mask_path, split="test")


def iter_normals(root: Path, entry: SourceEntry) -> Iterator[NormalImage]:
    """The defect-free images of ``train`` and ``test`` of every category."""
    root = Path(root)
    layout = MvtecLayout.of(entry)
    for category in _categories(root):
        for split in ("train", "test"):
            for image_path in _images(category / split / layout.normal):
                yield NormalImage(f"{entry.id}/{category.name}/{split}/{image_path.stem}", image_path, split)


@dataclass(frozen=True, slots=True)
class MvtecLoader:
    """The loader of one origin published in the MVTec layout (same two functions as a module).

    A user's collection read in this layout (``daad ingest NAME --loader mvtec_ad``) passes its
    own entry, which takes this origin's layout when it names none."""

    origin: str

    def iter_records(self, root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
        own = catalogue_entry(self.origin)
        entry = entry or own
        return iter_records(root, entry if entry.layout else replace(entry, layout=own.layout))

    def iter_normals(self, root: Path) -> Iterator[NormalImage]:
        return iter_normals(root, catalogue_entry(self.origin))
