"""What a build's workers do to manifest lines: parse them, select the records that go in,
and turn each into its row but for the image bytes (the parent reads those, see
:mod:`daad.dataset.build`). Free of ``datasets`` and ``pyarrow``, so that a worker process starts in
a fraction of a second (:mod:`daad.processes`)."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import NamedTuple

from daad.errors import DaadError, ManifestError
from daad.images import image_cell
from daad.licences import LicencePolicy
from daad.registry.manifest import parse_lines
from daad.record import ImageRef, Record
from daad.registry.registry import Registry
from daad.taxonomy import ANOMALY_CLASSES, UNMAPPED, Status
from daad.registry.validate import check_entry

DUP_MARK = "-dup-"
"""Shard name mark of near copies of evaluation images (see :func:`shard_of`)."""


def shard_of(record: Record, near_copy_of: list[str] | None = None) -> str:
    """The shard a record's row goes to: ``data/<origin>/<class>.parquet``, or
    ``<class>-dup-<E>[-<E2>...].parquet`` for a near copy of evaluation images (left out of ``no-<E>``)."""
    suffix = f"{DUP_MARK}{'-'.join(near_copy_of)}" if near_copy_of else ""
    return f"data/{record.origin}/{record.anomaly_class}{suffix}.parquet"


class Pending(NamedTuple):
    """A manifest line's row, all but its image (read by the parent)."""

    shard: str
    row: dict
    origin: str
    image: ImageRef
    image_name: str
    counts_key: tuple[str, str, str]
    """(anomaly_class, source, licence)"""


Prepared = tuple[Path, list[tuple[int, str, "str | DaadError | Pending"]]]
"""A chunk of a manifest once prepared: the manifest, and per line its number, the record
id and a skip reason, the error, or the pending row."""


def prepare_chunk(
    job: tuple[Registry, LicencePolicy, tuple[Status, ...], bool], chunk: tuple[Path, list[tuple[int, str]]]
) -> Prepared:
    """Parse, select and turn into pending rows the lines of one chunk (in a worker). Bad lines raise ``ManifestError``."""
    registry, policy, statuses, weak_masks = job
    manifest, lines = chunk
    records = []
    for (lineno, _), record in zip(lines, parse_lines(manifest, lines)):
        if isinstance(record, ManifestError):
            raise record
        records.append((lineno, record))
    reasons = [skip_reason(record, policy, statuses, weak_masks) for _, record in records]
    near_copies = registry.rules.near_duplicate_evaluations(
        (r for (_, r), why in zip(records, reasons) if why is None), registry.query_signature
    )
    prepared = []
    for (lineno, record), reason in zip(records, reasons):
        outcome = reason if reason is not None else pending_row(record, near_copies.get(record.id), registry)
        prepared.append((lineno, record.id, outcome))
    return manifest, prepared


def skip_reason(record: Record, policy: LicencePolicy, statuses: tuple[Status, ...], weak_masks: bool) -> str | None:
    """Why ``record`` stays out of the build (counted as skipped), or ``None``."""
    if record.status not in statuses:
        return f"status:{record.status}"
    if record.duplicate_of is not None:
        return f"duplicate:{record.origin}"
    if record.anomaly_class == UNMAPPED:
        return "unmapped_class"
    if record.weak_mask and not weak_masks:
        return "weak_mask"
    if not policy.allows(record.licence):
        return f"licence_policy:{record.licence}"
    return None


def pending_row(record: Record, near_copy_of: list[str] | None, registry: Registry) -> Pending | DaadError:
    """``record``'s row but for the image bytes, or the error (the checks of
    :func:`daad.registry.validate.check_entry`, made before the mask is drawn)."""
    assert record.anomaly_class in ANOMALY_CLASSES
    try:
        check_entry(record, registry.licences)
    except DaadError as exc:
        return exc
    name = posixpath.basename((record.image.path or record.image.url or record.id).rstrip("/"))
    row = {
        "id": record.id,
        "mask": image_cell(record.mask.png(), f"{posixpath.splitext(name)[0]}_mask.png"),
        "anomaly_class": ANOMALY_CLASSES.index(record.anomaly_class),
        "source": str(record.source),
        "origin": record.origin,
        "native_label": record.native_label,
        "licence": record.licence,
        "width": record.width,
        "height": record.height,
        "bbox": list(record.bbox) if record.bbox else None,
        "area": record.area,
        "phash": record.phash,
        "image_sha256": record.image.sha256,
        "split": record.split,
        "url": record.image.url,
        "page_url": record.page_url,
    }
    key = (record.anomaly_class, str(record.source), record.licence)
    return Pending(shard_of(record, near_copy_of), row, record.origin, record.image, name, key)
