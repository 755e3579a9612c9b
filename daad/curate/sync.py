"""``daad curate sync``: the curators' decisions in a FiftyOne dataset -> manifest changes.

What a curator does in the App, and what it becomes, is in :mod:`daad.curate.edits`.
Each change names the fields in ``Record.curated`` so re-ingest keeps it. A change is
only applied when the record's manifest line is still the one opened (its
fingerprint); otherwise it is reported as a conflict, nothing is overwritten and the
edit stays in the dataset (``--discard-unsynced`` drops it).

Applied changes go first into the curation journal (:mod:`daad.curate.journal`), then into
the manifests, then the samples are re-pinned to the new lines, so a second sync changes
nothing. A sync killed at any point is finished by the next one: a change already in its
manifest is recognised (the line is the one the edit makes) and only journalled and
re-pinned, never reported as a conflict.
"""

from __future__ import annotations

import getpass
import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daad.curate.dataset import KIND_REGISTRY, STATUS_TAG, fingerprint
from daad.curate.edits import edited, opened_record
from daad.curate.session import CurationEnvError, CurationSession
from daad.curate.journal import append_entries, curated_values
from daad.registry.manifest import dumps, read_manifest, write_manifest
from daad.record import Record


@dataclass
class Change:
    """One record's curated change: the opened record and the record to write."""

    before: Record
    after: Record
    fields: tuple[str, ...]

    @property
    def record_id(self) -> str:
        return self.before.id

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{field: {"before": ..., "after": ...}}`` (masks as area, bbox and a hash of the RLE)."""
        out = {}
        for name in self.fields:
            if name == "status":
                out["status"] = {"before": _status(self.before), "after": _status(self.after)}
            elif name == "anomaly_class":
                out[name] = {"before": self.before.anomaly_class, "after": self.after.anomaly_class}
            else:
                out[name] = {"before": _mask(self.before), "after": _mask(self.after)}
        return out

    def describe(self) -> str:
        parts = []
        for name, diff in self.summary().items():
            if name == "mask":
                b, a = diff["before"] or {}, diff["after"]
                parts.append(f"mask area {b.get('area')} -> {a['area']}, bbox {b.get('bbox')} -> {a['bbox']}")
            elif name == "status":
                parts.append(f"status {_fmt(diff['before'])} -> {_fmt(diff['after'])}")
            else:
                parts.append(f"{name} {diff['before']} -> {diff['after']}")
        return f"{self.record_id}: " + "; ".join(parts)


@dataclass
class Conflict:
    record_id: str
    reason: str

    def describe(self) -> str:
        return f"{self.record_id}: CONFLICT: {self.reason}"


@dataclass
class SyncReport:
    dataset: str
    manifests_dir: Path
    changes: list[Change] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    recovered: list[Change] = field(default_factory=list)
    """Changes already in the manifest (a sync killed before it re-pinned its samples): journalled and re-pinned."""
    discarded: list[str] = field(default_factory=list)
    """Samples whose unsyncable edits ``--discard-unsynced`` dropped (``daad curate open`` reloads them)."""
    unchanged: int = 0
    applied: bool = False

    def lines(self) -> list[str]:
        return (
            [c.describe() for c in self.changes]
            + [f"{c.describe()} (already in the manifest: an interrupted sync is finished)" for c in self.recovered]
            + [c.describe() for c in self.conflicts]
            + [f"{rid}: edits discarded (`daad curate open` reloads it)" for rid in self.discarded]
        )

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "changes": [{"id": c.record_id, "fields": list(c.fields), "diff": c.summary()} for c in self.changes],
            "conflicts": [{"id": c.record_id, "reason": c.reason} for c in self.conflicts],
            "recovered": [c.record_id for c in self.recovered],
            "discarded": self.discarded,
            "unchanged": self.unchanged,
            "applied": self.applied,
        }


def sync(
    session: CurationSession,
    name: str,
    *,
    manifests_dir: Path | None = None,
    dry_run: bool = False,
    who: str | None = None,
    discard_unsynced: bool = False,
) -> SyncReport:
    """Plan (and unless ``dry_run``, apply) the curated changes of FiftyOne dataset ``name``.

    Edits that cannot be applied (conflicts) stay in the dataset, unless ``discard_unsynced``:
    then their samples are removed from it (the next ``daad curate open`` reloads them)."""
    fo = session.fiftyone()
    if not fo.dataset_exists(name):
        raise CurationEnvError(f"no FiftyOne dataset {name!r} in {session.database_dir}; run `daad curate open` first")
    dataset = fo.load_dataset(name)
    if dataset.info.get("daad_kind") != KIND_REGISTRY:
        raise CurationEnvError(f"FiftyOne dataset {name!r} does not hold registry records (nothing to sync)")
    manifests_dir = Path(manifests_dir or dataset.info["manifests_dir"])
    report = SyncReport(name, manifests_dir)
    current: dict[str, dict[str, str]] = {}
    for sample in dataset.iter_samples(progress=False):
        opened = opened_record(sample)
        try:
            after, changed = edited(sample, opened)
        except ValueError as exc:
            report.conflicts.append(Conflict(opened.id, str(exc)))
            continue
        if not changed:
            report.unchanged += 1
            continue
        if opened.origin not in current:
            current[opened.origin] = _manifest_lines(manifests_dir / f"{opened.origin}.jsonl")
        now = current[opened.origin].get(opened.id)
        change = Change(opened, replace(after, curated=tuple(sorted(set(opened.curated) | set(changed)))),
                        tuple(changed))
        if now == sample["manifest_line"]:
            report.changes.append(change)
        elif now is not None and now == dumps(change.after):
            report.recovered.append(change)
        elif now is None:
            report.conflicts.append(Conflict(opened.id, "record is no longer in its manifest"))
        else:
            report.conflicts.append(Conflict(opened.id, "manifest record changed since `daad curate open`"))
    if dry_run:
        return report
    if report.changes or report.recovered:
        _apply(report, dataset, who or os.environ.get("DAAD_CURATOR") or getpass.getuser())
    if discard_unsynced and report.conflicts:
        report.discarded = [c.record_id for c in report.conflicts]
        dataset.delete_samples(dataset.select_by("record_id", report.discarded))
    return report


def _apply(report: SyncReport, dataset, who: str) -> None:
    """Journal every change, then write the manifests, then re-pin the samples: a kill at any
    point leaves a state the next sync finishes (a change found in its manifest is recovered)."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    done = report.changes + report.recovered
    append_entries(report.manifests_dir, [
        {"time": stamp, "who": who, "dataset": report.dataset, "manifest": f"{c.before.origin}.jsonl",
         "id": c.record_id, "fields": list(c.fields), "diff": c.summary(),
         "before": fingerprint(dumps(c.before)), "after": curated_values(c.after, c.fields)}
        for c in done
    ])
    by_origin: dict[str, dict[str, Record]] = defaultdict(dict)
    for change in report.changes:
        by_origin[change.before.origin][change.record_id] = change.after
    for origin, new in sorted(by_origin.items()):
        path = report.manifests_dir / f"{origin}.jsonl"
        write_manifest(path, [new.get(r.id, r) for r in read_manifest(path)])
    after = {c.record_id: c.after for c in done}
    for sample in dataset.select_by("record_id", sorted(after)).iter_samples(autosave=True, progress=False):
        record = after[sample["record_id"]]
        line = dumps(record)
        sample["manifest_line"] = line
        sample["fingerprint"] = fingerprint(line)
        sample["status"] = str(record.status)
        sample["reason"] = record.reason
        sample.tags = [t for t in sample.tags if not t.startswith(STATUS_TAG)] + [f"{STATUS_TAG}{record.status}"]
    report.applied = True


def _manifest_lines(path: Path) -> dict[str, str]:
    """id -> manifest line (canonical form) of one manifest."""
    return {r.id: dumps(r) for r in read_manifest(path)} if path.exists() else {}


def _status(record: Record) -> dict[str, str | None]:
    return {"status": str(record.status), "reason": record.reason}


def _fmt(status: dict) -> str:
    return status["status"] + (f" ({status['reason']})" if status["reason"] else "")


def _mask(record: Record) -> dict | None:
    if record.mask is None:
        return None
    return {"area": record.area, "bbox": list(record.bbox or ()),
            "rle_sha256": hashlib.sha256(record.mask.counts.encode("ascii")).hexdigest()[:16]}
