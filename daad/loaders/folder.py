"""A user's own collection of anomalies: how new images enter DAAD.

Layout: a folder with ``metadata.csv`` (one row per image; columns ``image`` (path
under the folder), ``class`` (a DAAD class, or a native name the catalogue entry maps),
and optionally ``source`` (``online_search`` / ``reality_photo``), ``licence``, ``url``,
``page_url``, ``note``, ``mask``) and the images. Each image's mask is looked up in order:

1. the ``mask`` column: a PNG/BMP (binarised as :mod:`daad.annotations.bitmap` says), a
   LabelMe JSON or an EISeg JSON;
2. ``annotations.json`` (COCO instances) in the folder, by ``file_name`` (the image path);
3. a LabelMe / EISeg JSON beside the image (``<stem>.json``);
4. ``masks/<stem>.png``.

An image without any mask becomes a ``needs_mask`` record (draw it with EISeg, then
re-ingest); a bitmap mask that is not two-valued or covers most of its image becomes a
``needs_review`` record whose ``reason`` says which. A row that cannot become a record (its
path leaves the folder, its image or mask is missing, corrupt or a decompression bomb, its
metadata is wrong) is skipped, named with its file and reason, and the rest goes on.
Ids ``<origin>/<image path without suffix>``, where the origin is the collection's own
name (``daad ingest my_photos --loader folder --root my_photos=PATH``; its catalogue entry:
:mod:`daad.registry.collection`); ``folder`` is the template entry used when none is given.

License:
    Per row (``licence`` column, SPDX or LicenseRef), else the catalogue entry's.

Reference:
    The collector's own; cite DAAD (see ``manifests/sources.toml``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from daad.annotations.bitmap import read_bitmap
from daad.annotations.coco import CocoImage, read_coco
from daad.annotations.eiseg import read_eiseg
from daad.annotations.labelme import read_labelme
from daad.registry.catalogue import CatalogueError, SourceEntry
from daad.errors import DaadError, PathEscapeError, RecordFileError
from daad.images import decode_image, perceptual_hash, read_verified, sha256_bytes
from daad.licences import check_licence
from daad.loaders.base import NormalImage, Skipped, record_or_skip, relative_to_root
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import ImageRef, Record
from daad.registry.roots import resolve_in_root
from daad.taxonomy import Source, Status

ORIGIN = "folder"
METADATA = "metadata.csv"
COCO_FILE = "annotations.json"
MASK_DIR = "masks"


class FolderFormatError(DaadError, ValueError):
    """The metadata file is missing, or a row or annotation file cannot be read; names the file and row."""


def _json_mask(path: Path, width: int, height: int) -> np.ndarray:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "imageWidth" in data:
        return read_labelme(path)[0]
    return read_eiseg(path, width, height)[0]


def _find_mask(root: Path, image_path: Path, rel: str, rid: str, row: dict[str, str], coco: dict[str, CocoImage],
               size: tuple[int, int]) -> tuple[np.ndarray, Path, str | None] | None:
    """The mask of a row, its file, and why a person should review it (bitmaps only), or ``None``."""
    width, height = size
    if row.get("mask"):
        path = resolve_in_root(root, row["mask"], rid)
        if path.suffix.lower() == ".json":
            return _json_mask(path, width, height), path, None
        return _bitmap(path, rid)
    if rel in coco:
        return coco[rel].mask, root / COCO_FILE, None
    beside = image_path.with_suffix(".json")
    if beside.is_file():
        return _json_mask(beside, width, height), beside, None
    png = resolve_in_root(root, f"{MASK_DIR}/{image_path.stem}.png", rid)
    if png.exists():
        return _bitmap(png, rid)
    return None


def _bitmap(path: Path, rid: str) -> tuple[np.ndarray, Path, str | None]:
    bitmap = read_bitmap(path, record_id=rid)
    return bitmap.mask, path, bitmap.review()


def _rows(root: Path) -> Iterator[tuple[int, dict[str, str]]]:
    if not (root / METADATA).is_file():
        raise FolderFormatError(
            f"{root / METADATA} is missing: a folder collection lists its images there (columns image, class; "
            f"see `daad.loaders.folder`), then run `daad ingest NAME --loader folder --root {root}`")
    with open(root / METADATA, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"image", "class"} - set(reader.fieldnames or ())
        if missing:
            raise FolderFormatError(f"{root / METADATA}: missing column(s) {', '.join(sorted(missing))}")
        for lineno, row in enumerate(reader, start=2):
            yield lineno, {k: (v or "").strip() for k, v in row.items() if k}


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per metadata row: with its mask, or ``needs_mask`` when it has none yet."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    coco = read_coco(root / COCO_FILE) if (root / COCO_FILE).is_file() else {}
    for lineno, row in _rows(root):
        rel = PurePosixPath(row["image"]).as_posix()
        native_id = PurePosixPath(rel).with_suffix("").as_posix()
        rid = f"{entry.id}/{native_id}"
        try:
            image_path = resolve_in_root(root, rel, rid)
            anomaly_class = entry.map_class(row["class"])
            source = Source(row.get("source") or entry.source)
            licence = check_licence(row.get("licence") or entry.licence)
            data = read_verified(image_path, None, rid)
            image = decode_image(data, rid, image_path)
            found = _find_mask(root, image_path, rel, rid, row, coco, image.size)
        except (RecordFileError, PathEscapeError) as exc:
            yield Skipped(rid, Path(exc.path) if exc.path is not None else None, exc.reason, str(exc))
            continue
        except (ValueError, OSError, CatalogueError) as exc:
            yield Skipped(rid, root / METADATA, "bad_metadata", f"{METADATA}:{lineno}: {exc}")
            continue
        extra = dict(source=source, licence=licence, page_url=row.get("page_url") or None)
        url = row.get("url") or None
        if found is None:
            yield Record(
                id=rid, anomaly_class=anomaly_class, source=source, origin=entry.id,
                native_label=row["class"], licence=licence,
                image=ImageRef(path=relative_to_root(image_path, root), url=url, sha256=sha256_bytes(data)),
                width=image.width, height=image.height, phash=perceptual_hash(image), status=Status.NEEDS_MASK,
                page_url=extra["page_url"], note=row.get("note") or None,
            )
            continue
        mask, mask_path, review = found
        item = record_or_skip(entry, native_id, row["class"], image_path, root, mask, mask_path=mask_path,
                              note=row.get("note") or None)
        if isinstance(item, Record):
            item = replace(item, image=replace(item.image, url=url), **extra)
            if review is not None:
                item = replace(item, status=Status.NEEDS_REVIEW, reason=review)
        yield item


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """A collection of anomalies has no normal images."""
    return iter(())
