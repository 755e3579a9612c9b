"""``daad validate``: every record checked against its file.

Checks: the licence is in ``licences.toml``, the mask is non-empty and not a
decompression bomb, the path stays in its root, the file is a regular file, non-empty,
its sha256 matches the manifest, it decodes fully (PIL, decompression-bomb guard on, EXIF
orientation applied, 8 bits a channel), and the mask has the image's size. ``daad build``
applies the same checks, the image's from its header (:func:`daad.images.image_size`).
Records are streamed, with a bounded number in flight, so memory stays flat however many
there are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from daad.counts import Counts
from daad.errors import DaadError, MaskMismatchError, RecordFileError
from daad.images import MAX_PIXELS, decode_image
from daad.licences import FILENAME as LICENCES_FILE
from daad.licences import LicenceCatalogue
from daad.registry.manifest import count_lines
from daad.record import Record
from daad.registry.registry import Registry
from daad.taxonomy import Status

IN_FLIGHT_PER_WORKER = 4


class UnknownLicenceError(DaadError):
    """A record's licence is not in ``licences.toml``: nobody has said what it allows."""

    reason = "unknown_licence"

    def __init__(self, record_id: str, licence: str) -> None:
        self.record_id, self.licence = record_id, licence
        super().__init__(
            f"{record_id}: licence {licence!r} is not in {LICENCES_FILE}; "
            "add it there with its commercial/attribution/share_alike flags"
        )


@dataclass
class ValidationReport(Counts):
    """Accepted / rejected / skipped counts, rejections by reason, and each error message."""

    errors: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "errors": self.errors,
        }


def check_entry(record: Record, licences: LicenceCatalogue) -> None:
    """The checks a manifest line alone allows: a known licence, and a mask that is there,
    non-empty and small enough to draw (checked on its runs, before any pixel is allocated)."""
    where = record.image.path or record.image.url
    if record.licence not in licences:
        raise UnknownLicenceError(record.id, record.licence)
    mask = record.mask
    if mask is None:
        raise RecordFileError(record.id, where, "no_mask", "record has no mask")
    if mask.width * mask.height > MAX_PIXELS:
        raise RecordFileError(
            record.id, where, "decompression_bomb", f"mask is {mask.width}x{mask.height}, above {MAX_PIXELS} pixels"
        )
    if mask.area() == 0:
        raise MaskMismatchError(where, f"{record.id} (manifest RLE)", "empty_mask", "mask is empty")


def check_size(record_id: str, path: Path | str, mask_size: tuple[int, int], image_size: tuple[int, int]) -> None:
    """``MaskMismatchError`` when the mask's ``(width, height)`` is not the image's."""
    if mask_size != image_size:
        raise MaskMismatchError(
            path, f"{record_id} (manifest RLE)", "mask_size_mismatch",
            f"mask is {mask_size[0]}x{mask_size[1]}, image is {image_size[0]}x{image_size[1]}",
        )


def check_record(registry: Registry, record: Record) -> None:
    """Raise the specific error that makes ``record`` unusable, or return quietly."""
    check_entry(record, registry.licences)
    path, data = registry.read_image(record)
    image = decode_image(data, record.id, path)
    check_size(record.id, path, (record.mask.width, record.mask.height), image.size)


def validate(
    registry: Registry,
    origins: Iterable[str] | None = None,
    *,
    progress: bool = True,
    workers: int = 2,
) -> ValidationReport:
    """Check every record with a local image; records still waiting for an image are skipped."""
    report = ValidationReport()
    registry.licences  # a malformed licences.toml fails here, once

    def run(record: Record) -> DaadError | None:
        try:
            check_record(registry, record)
        except DaadError as exc:
            return exc
        return None

    def settle(record: Record, future: Future) -> None:
        error = future.result()
        bar.update()
        if error is None:
            report.accepted += 1
        else:
            reason = getattr(error, "reason", type(error).__name__)
            report.rejected[reason] += 1
            report.errors.append({"id": record.id, "reason": reason, "message": str(error)})

    total = sum(count_lines(p) for p in registry.manifests(origins))
    in_flight: deque[tuple[Record, Future]] = deque()
    with ThreadPoolExecutor(workers) as pool, tqdm(
        total=total, desc="validate", unit="rec", disable=not progress
    ) as bar:
        for record in registry.records(origins):
            if record.status in (Status.NEEDS_IMAGE, Status.REJECTED) or record.mask is None:
                report.skipped[f"status:{record.status}" if record.mask is not None else "no_mask"] += 1
                bar.update()
                continue
            in_flight.append((record, pool.submit(run, record)))
            if len(in_flight) >= IN_FLIGHT_PER_WORKER * workers:
                settle(*in_flight.popleft())
        while in_flight:
            settle(*in_flight.popleft())
    return report
