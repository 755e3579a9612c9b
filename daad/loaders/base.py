"""What every loader shares: building a record from an image file and a mask array,
and the normal-image reference loaders yield for the generators' target domains.

A loader module is small: a docstring with the dataset, its licence and reference;
constants describing the published layout; and two pure functions,
``iter_records(root, entry=None) -> Iterator[Record | Skipped]`` (``entry``: the origin's
catalogue entry, looked up when not given) and ``iter_normals(root) -> Iterator[NormalImage]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daad.registry.catalogue import SourceEntry
from daad.errors import MaskMismatchError, RecordFileError
from daad.images import decode_image, perceptual_hash, read_verified, sha256_bytes
from daad.masks import RLE
from daad.record import ImageRef, Record
from daad.taxonomy import Status


@dataclass(frozen=True, slots=True)
class NormalImage:
    """A defect-free image of an origin (a target domain for generators)."""

    id: str
    path: Path
    """Absolute path of the image file."""
    split: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """An item of a source that yields no record, and why (reported, never silent)."""

    id: str
    path: Path | None
    reason: str
    """Short key used to group counts: ``no_annotation``, ``empty_mask``, ``corrupt_image`` ..."""
    detail: str = ""


def relative_to_root(path: Path, root: Path) -> str:
    """POSIX path of ``path`` under ``root`` (what records store)."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


def make_record(
    entry: SourceEntry,
    native_id: str,
    native_label: str,
    image_path: Path,
    root: Path,
    mask: np.ndarray,
    *,
    mask_path: Path | str | None = None,
    split: str | None = None,
    note: str | None = None,
    anomaly_class: str | None = None,
) -> Record:
    """A record for one anomaly of ``entry``'s origin.

    Reads and hashes the image, checks the mask against it (same size, non-empty:
    ``MaskMismatchError`` naming both files otherwise) and maps the native label
    through the catalogue, unless the loader decided ``anomaly_class`` itself (an image
    holding several native defects, each mapped through the catalogue).
    """
    rid = f"{entry.id}/{native_id}"
    data = read_verified(image_path, None, rid)
    image = decode_image(data, rid, image_path)
    if mask.shape[:2] != (image.height, image.width):
        raise MaskMismatchError(
            image_path, mask_path or "<mask>", "mask_size_mismatch",
            f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.width}x{image.height}",
        )
    if not mask.any():
        raise MaskMismatchError(image_path, mask_path or "<mask>", "empty_mask", "mask is empty")
    return Record(
        id=rid,
        anomaly_class=anomaly_class or entry.map_class(native_label),
        source=entry.source,
        origin=entry.id,
        native_label=native_label,
        licence=entry.licence,
        image=ImageRef(path=relative_to_root(image_path, root), sha256=sha256_bytes(data)),
        phash=perceptual_hash(image),
        status=Status.ACCEPTED,
        split=split,
        note=note,
    ).with_mask(RLE.encode(mask))


def record_or_skip(
    entry: SourceEntry,
    native_id: str,
    native_label: str,
    image_path: Path,
    root: Path,
    mask: np.ndarray,
    **kwargs,
) -> Record | Skipped:
    """:func:`make_record`, turning a bad image or mask into a :class:`Skipped` with its reason."""
    try:
        return make_record(entry, native_id, native_label, image_path, root, mask, **kwargs)
    except (MaskMismatchError, RecordFileError) as exc:
        return Skipped(f"{entry.id}/{native_id}", Path(image_path), exc.reason, str(exc))
