"""The MVTec LOCO AD folder layout, shared by the datasets published in it (MVTec LOCO AD,
AutoVI): those sources have no module of their own; :class:`LocoLoader` reads each from its
catalogue entry (``[<origin>.layout] reader = "loco"``; licence, reference and notes are there too).

``<category>/{train,validation}/good/<stem>.png`` (defect-free; AutoVI has no ``validation``),
``<category>/test/{good,<type>}/<stem>.png`` (LOCO's types: ``logical_anomalies`` and
``structural_anomalies``; AutoVI's: one per defect kind) and, per defective test image,
``<category>/ground_truth/<type>/<stem>/000.png, 001.png ...`` (AutoVI: ``0000.png``): **one
file per defect**, whose non-zero pixels all hold that defect's ``pixel_value`` in the category's
``defects_config.json`` (a list of ``{"defect_name", "pixel_value", "saturation_threshold",
"relative_saturation"}``; the saturation fields are for the sPRO metric and not read here).

Records: one per mask file (a distinct anomaly), id ``<origin>/<category>/<type>/<stem>/<mask
stem>``, native label ``<category>/<defect_name>`` with the name read from the config, split
``test``. Several records share an image when it holds several defects (``daad dedup`` never marks
records of one image file as copies of each other). Skipped, by reason: ``no_annotation`` (a
defective image without a mask file), ``no_defects_config`` / ``bad_defects_config`` (the
category's config is missing, or not a list of names with distinct values), ``several_mask_values``
(a mask holding more than one non-zero value), ``unknown_mask_value`` (a value the config does not
name), ``defect_not_in_catalogue`` (a name the catalogue's class map does not list), and the
image and mask reasons of :func:`~daad.loaders.base.record_or_skip` (``empty_mask``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from daad.annotations.bitmap import read_values
from daad.errors import RecordFileError
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import CatalogueReader
from daad.record import Record
from daad.registry.catalogue import SourceEntry

READER = "loco"
CONFIG = "defects_config.json"
NORMAL = "good"
NORMAL_SPLITS = ("train", "validation", "test")


class DefectsConfigError(ValueError):
    """A category's ``defects_config.json`` is missing or cannot be read as a list of defects."""

    def __init__(self, path: Path, reason: str, detail: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {detail}")


def defects_config(category: Path) -> dict[int, str]:
    """Pixel value -> defect name, from ``category/defects_config.json``; raises :class:`DefectsConfigError`."""
    path = category / CONFIG
    if not path.is_file():
        raise DefectsConfigError(path, "no_defects_config", f"no {CONFIG} in {category}")
    try:
        entries = json.loads(path.read_bytes())
        names: dict[int, str] = {}
        for item in entries:
            value, name = item["pixel_value"], item["defect_name"]
            if not isinstance(value, int) or isinstance(value, bool) or not isinstance(name, str) or not name:
                raise TypeError(f"pixel_value {value!r} / defect_name {name!r}")
            if value in names:
                raise ValueError(f"pixel_value {value} names both {names[value]!r} and {name!r}")
            names[value] = name
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DefectsConfigError(path, "bad_defects_config", f"not a list of defect_name / pixel_value: {exc}") from None
    return names


def _categories(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if (p / "test").is_dir())


def iter_records(root: Path, entry: SourceEntry) -> Iterator[Record | Skipped]:
    """One record per ground-truth file of every defective test image (see the module docstring)."""
    root = Path(root)
    for category in _categories(root):
        try:
            names: dict[int, str] | DefectsConfigError = defects_config(category)
        except DefectsConfigError as exc:
            names = exc
        for type_dir in sorted(p for p in (category / "test").iterdir() if p.is_dir() and p.name != NORMAL):
            for image_path in sorted(type_dir.glob("*.png")):
                image_id = f"{category.name}/{type_dir.name}/{image_path.stem}"
                mask_dir = category / "ground_truth" / type_dir.name / image_path.stem
                mask_paths = sorted(mask_dir.glob("*.png"))
                if not mask_paths:
                    yield Skipped(f"{entry.id}/{image_id}", image_path, "no_annotation", f"no masks in {mask_dir}")
                for mask_path in mask_paths:
                    yield _defect(entry, root, category.name, names, f"{image_id}/{mask_path.stem}", image_path, mask_path)


def _defect(entry: SourceEntry, root: Path, category: str, names: dict[int, str] | DefectsConfigError,
            native_id: str, image_path: Path, mask_path: Path) -> Record | Skipped:
    """The record of one defect's mask file, or why it has none."""
    rid = f"{entry.id}/{native_id}"
    if isinstance(names, DefectsConfigError):
        return Skipped(rid, mask_path, names.reason, str(names))
    try:
        values, _ = read_values(mask_path, record_id=rid)
    except RecordFileError as exc:
        return Skipped(rid, mask_path, exc.reason, str(exc))
    present = [int(v) for v in np.unique(values) if v]
    if not present:
        return Skipped(rid, mask_path, "empty_mask", f"{mask_path} is all zero")
    if len(present) > 1:
        return Skipped(rid, mask_path, "several_mask_values", f"values {present} in {mask_path}, one defect per file expected")
    if present[0] not in names:
        return Skipped(rid, mask_path, "unknown_mask_value",
                       f"value {present[0]} of {mask_path} is not a pixel_value of {CONFIG} ({sorted(names)})")
    label = f"{category}/{names[present[0]]}"
    if label not in entry.classes:
        return Skipped(rid, mask_path, "defect_not_in_catalogue", f"{label!r} has no entry in [{entry.id}.classes] of "
                                                                  f"sources.toml (map it to a DAAD class or to 'unmapped')")
    return record_or_skip(entry, native_id, label, image_path, root, (values > 0).astype(np.uint8),
                          mask_path=mask_path, split="test")


def iter_normals(root: Path, entry: SourceEntry) -> Iterator[NormalImage]:
    """The defect-free images of ``train``, ``validation`` (LOCO) and ``test`` of every category."""
    root = Path(root)
    for category in _categories(root):
        for split in NORMAL_SPLITS:
            for image_path in sorted((category / split / NORMAL).glob("*.png")):
                yield NormalImage(f"{entry.id}/{category.name}/{split}/{image_path.stem}", image_path, split)


class LocoLoader(CatalogueReader):
    """The loader of one origin published in the LOCO layout. A user's collection read in this
    layout passes its own entry (its class map names the defects)."""

    read_records = staticmethod(iter_records)
    read_normals = staticmethod(iter_normals)
