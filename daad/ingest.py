"""``daad ingest``: a loader's records -> ``manifests/<origin>.jsonl``, keeping curation.

Re-ingesting unchanged data rewrites nothing. For ids already in the manifest, the
fields a curator set (listed in ``Record.curated``: status/reason, anomaly_class,
mask) are kept from the manifest; everything else comes from the source.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from daad.loaders.base import Skipped
from daad.manifest import dumps, read_manifest, write_manifest
from daad.record import Record

_CURATED_FIELDS = {
    "status": ("status", "reason"),
    "anomaly_class": ("anomaly_class",),
    "mask": ("mask", "width", "height", "bbox", "area"),
    "image": ("image", "phash", "width", "height"),  # pinned by `daad fetch`
}


@dataclass
class IngestReport:
    accepted: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    unmapped: Counter = field(default_factory=Counter)
    """Native labels that map to no DAAD class, with their counts."""
    written: bool = False

    def to_json(self) -> dict:
        return {
            "records": self.accepted,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "skipped": dict(sorted(self.skipped.items())),
            "statuses": dict(sorted(self.statuses.items())),
            "unmapped": dict(sorted(self.unmapped.items())),
            "written": self.written,
        }


def keep_curation(new: Record, old: Record) -> Record:
    """``new`` with the curator-set fields of ``old``, and its ``duplicate_of`` mark while its image is unchanged."""
    if old.duplicate_of is not None and old.image.sha256 == new.image.sha256:
        new = replace(new, duplicate_of=old.duplicate_of)
    if not old.curated:
        return new
    kept = {name: getattr(old, name) for key in old.curated for name in _CURATED_FIELDS.get(key, (key,))}
    if "anomaly_class" in old.curated:
        kept["native_label"] = new.native_label
    return replace(new, curated=old.curated, **kept)


def ingest(items: Iterable[Record | Skipped], manifest: Path) -> IngestReport:
    """Merge ``items`` into ``manifest`` and write it if anything changed."""
    report = IngestReport()
    old = {r.id: r for r in read_manifest(manifest)} if manifest.exists() else {}
    merged: dict[str, Record] = {}
    for item in items:
        if isinstance(item, Skipped):
            report.skipped[item.reason] += 1
            continue
        if item.id in merged:
            raise ValueError(f"loader yielded id {item.id!r} twice")
        record = keep_curation(item, old[item.id]) if item.id in old else item
        merged[item.id] = record
        report.accepted += 1
        report.statuses[str(record.status)] += 1
        if record.anomaly_class == "unmapped":
            report.unmapped[record.native_label] += 1
        if item.id not in old:
            report.added += 1
        elif dumps(old[item.id]) != dumps(record):
            report.changed += 1
        else:
            report.unchanged += 1
    report.removed = len(set(old) - set(merged))
    if report.added or report.removed or report.changed or not manifest.exists():
        write_manifest(manifest, merged.values())
        report.written = True
    return report
