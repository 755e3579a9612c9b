"""``daad validate``: every record checked against its file.

Checks: the path stays in its root, the file exists and is non-empty, its sha256
matches the manifest, it decodes fully (PIL, decompression-bomb guard on), the mask
has the image's size and is non-empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from daad.errors import DaadError, MaskMismatchError, RecordFileError
from daad.images import decode_image
from daad.record import Record
from daad.registry import Registry
from daad.taxonomy import Status


@dataclass
class ValidationReport:
    """Accepted / rejected / skipped counts, rejections by reason, and each error message."""

    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    errors: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def to_json(self) -> dict:
        return {
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "errors": self.errors,
        }


def check_record(registry: Registry, record: Record) -> None:
    """Raise the specific error that makes ``record`` unusable, or return quietly."""
    path, data = registry.read_image(record)
    image = decode_image(data, record.id, path)
    if record.mask is None:
        raise RecordFileError(record.id, path, "no_mask", "record has no mask")
    if (record.mask.width, record.mask.height) != image.size:
        raise MaskMismatchError(
            path, f"{record.id} (manifest RLE)", "mask_size_mismatch",
            f"mask is {record.mask.width}x{record.mask.height}, image is {image.width}x{image.height}",
        )
    if record.mask.area() == 0:
        raise MaskMismatchError(path, f"{record.id} (manifest RLE)", "empty_mask", "mask is empty")


def validate(
    registry: Registry,
    origins: Iterable[str] | None = None,
    *,
    progress: bool = True,
    workers: int = 2,
) -> ValidationReport:
    """Check every record with a local image; records still waiting for an image are skipped."""
    report = ValidationReport()
    records = []
    for record in registry.records(origins):
        if record.status in (Status.NEEDS_IMAGE, Status.REJECTED) or record.mask is None:
            report.skipped[f"status:{record.status}" if record.mask is not None else "no_mask"] += 1
        else:
            records.append(record)

    def run(record: Record) -> DaadError | None:
        try:
            check_record(registry, record)
        except DaadError as exc:
            return exc
        return None

    with ThreadPoolExecutor(workers) as pool:
        for record, error in tqdm(
            zip(records, pool.map(run, records)), total=len(records), desc="validate", unit="rec", disable=not progress
        ):
            if error is None:
                report.accepted += 1
            else:
                reason = getattr(error, "reason", type(error).__name__)
                report.rejected[reason] += 1
                report.errors.append({"id": record.id, "reason": reason, "message": str(error)})
    return report
