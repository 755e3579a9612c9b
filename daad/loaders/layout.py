"""Sources whose published layout is described as data: ``[<origin>.layout]`` in the catalogue.

A layout names the images (a glob and a regular expression over their root-relative
paths), where each image's mask is (a path template filled from the expression's
groups), and how to read it: a bitmap binarised at a threshold (image beside its mask,
or image folder + mask folder) or a LabelMe JSON, or one bitmap per native label (``labels``).
See :class:`daad.registry.catalogue.Layout`. Sources read this way: Magnetic Tile Defect, DeepCrack,
BSData, CRACK500, Cracks and Potholes in Road Images and others (see the catalogue). Their licences
and references are in ``manifests/sources.toml``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np

from daad.annotations.bitmap import read_mask
from daad.annotations.labelme import LabelMeFormatError, read_labelme
from daad.registry.catalogue import Layout, SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import CatalogueReader
from daad.record import Record


class LayoutError(ValueError):
    """An origin has no ``layout`` table in the catalogue, or its table does not fit a file it matches."""


@dataclass(frozen=True, slots=True)
class LayoutItem:
    """One image of a layout: its native id and label, mask path and split."""

    native_id: str
    label: str | None
    image: Path
    mask: Path
    split: str | None


def layout_of(entry: SourceEntry) -> Layout:
    if not isinstance(entry.layout, Layout):
        raise LayoutError(f"origin {entry.id!r} has no [{entry.id}.layout] table in sources.toml")
    return entry.layout


def iter_items(root: Path, layout: Layout) -> Iterator[LayoutItem]:
    """The images of ``root`` that the layout names, in path order (one item per label of ``labels``)."""
    root = Path(root)
    pattern = re.compile(layout.match)
    for image in sorted(root.glob(layout.images)):
        match = pattern.fullmatch(image.relative_to(root).as_posix())
        if match is None or not image.is_file():
            continue
        groups = match.groupdict()
        try:
            values = layout.values(groups)
        except ValueError as exc:
            raise LayoutError(f"{image}: {exc}") from None
        for label in layout.labels or (layout.label or groups.get("label"),):
            fields = {**values, "label": label} if layout.labels else values
            yield LayoutItem(
                native_id=layout.id.format(**fields),
                label=label,
                image=image,
                mask=root / layout.mask.format(**fields),
                split=groups.get("split"),
            )


def _is_normal(item: LayoutItem, layout: Layout) -> bool:
    return item.label in layout.normal_labels or (layout.unannotated == "normal" and not item.mask.is_file())


def _read(item: LayoutItem, layout: Layout) -> tuple[np.ndarray, str]:
    """The mask and the native label (a LabelMe file's one label when the layout gives none)."""
    if layout.mask_format == "bitmap":
        return read_mask(item.mask, threshold=layout.threshold), item.label or ""
    mask, labels = read_labelme(item.mask)
    if item.label is not None:
        return mask, item.label
    if len(set(labels)) != 1:
        raise LabelMeFormatError(f"{item.mask}: expected one label, found {sorted(set(labels)) or 'none'}")
    return mask, labels[0]


def _by_image(root: Path, layout: Layout) -> Iterator[list[LayoutItem]]:
    """The items of each image (several where the layout has ``labels``)."""
    for _, items in groupby(iter_items(root, layout), key=lambda item: item.image):
        yield list(items)


def iter_records(root: Path, entry: SourceEntry) -> Iterator[Record | Skipped]:
    """One record per annotated image (per label with a non-empty mask where the layout has ``labels``); an
    image without its mask is skipped or, per the layout, normal."""
    root = Path(root)
    layout = layout_of(entry)
    for items in _by_image(root, layout):
        empty = []
        for item in items:
            if _is_normal(item, layout):
                continue
            rid = f"{entry.id}/{item.native_id}"
            if not item.mask.is_file():
                yield Skipped(rid, item.image, "no_annotation", f"{item.mask} missing")
                continue
            try:
                mask, label = _read(item, layout)
            except (LabelMeFormatError, OSError) as exc:
                yield Skipped(rid, item.mask, "bad_annotation", str(exc))
                continue
            if layout.labels and not mask.any():
                empty.append(item)
                continue
            yield record_or_skip(entry, item.native_id, label, item.image, root, mask, mask_path=item.mask,
                                 split=item.split)
        if empty and len(empty) == len(items):
            yield Skipped(f"{entry.id}/{items[0].native_id}", items[0].image, "empty_mask",
                          f"every label's mask is all background: {', '.join(i.mask.name for i in empty)}")


def iter_normals(root: Path, entry: SourceEntry) -> Iterator[NormalImage]:
    """The defect-free images: those of a normal label, or without a mask where the layout says so."""
    layout = layout_of(entry)
    for item, *_ in _by_image(Path(root), layout):
        if _is_normal(item, layout):
            yield NormalImage(f"{entry.id}/{item.native_id}", item.image, item.split)


class LayoutLoader(CatalogueReader):
    """The loader of one origin read through its catalogue layout."""

    read_records = staticmethod(iter_records)
    read_normals = staticmethod(iter_normals)
