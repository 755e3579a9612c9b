"""``daad curate sync``: the curators' decisions in a FiftyOne dataset -> manifest changes.

What a curator does in the App, and what it becomes:

- tag ``accept`` / ``reject`` / ``needs_review`` -> ``status`` (a ``reason:<why>`` tag
  sets ``reason``; a reject needs one);
- edit the ``anomaly_class`` label -> ``anomaly_class`` (``native_label`` keeps the
  origin's own name);
- point ``ground_truth`` at a new mask file (``mask_path``) or set its in-memory
  ``mask`` -> a new RLE with its bbox and area.

Each change names the fields in ``Record.curated`` so re-ingest keeps it. A change is
only applied when the record's manifest line is still the one opened (its
fingerprint); otherwise it is reported as a conflict and nothing is overwritten.
Applied changes are appended to ``manifests/curation.log.jsonl``; the samples are
then re-pinned to the new lines, so a second sync changes nothing.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daad.curate.dataset import (
    CLASS_FIELD, KIND_REGISTRY, MASK_FIELD, STATUS_TAG, fingerprint, read_mask_file,
)
from daad.curate.session import CurationEnvError, CurationSession
from daad.manifest import dumps, read_manifest, write_manifest
from daad.masks import RLE
from daad.record import Record
from daad.taxonomy import Status, check_class

LOG_FILE = "curation.log.jsonl"
DECISION_TAGS = {"accept": Status.ACCEPTED, "reject": Status.REJECTED, "needs_review": Status.NEEDS_REVIEW}
REASON_TAG = "reason:"


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
    unchanged: int = 0
    applied: bool = False

    def lines(self) -> list[str]:
        return [c.describe() for c in self.changes] + [c.describe() for c in self.conflicts]

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "changes": [{"id": c.record_id, "fields": list(c.fields), "diff": c.summary()} for c in self.changes],
            "conflicts": [{"id": c.record_id, "reason": c.reason} for c in self.conflicts],
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
) -> SyncReport:
    """Plan (and unless ``dry_run``, apply) the curated changes of FiftyOne dataset ``name``."""
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
        opened = Record.from_json(json.loads(sample["manifest_line"]))
        try:
            after, changed = _edited(sample, opened)
        except ValueError as exc:
            report.conflicts.append(Conflict(opened.id, str(exc)))
            continue
        if not changed:
            report.unchanged += 1
            continue
        if opened.origin not in current:
            current[opened.origin] = _manifest_lines(manifests_dir / f"{opened.origin}.jsonl")
        now = current[opened.origin].get(opened.id)
        if now is None:
            report.conflicts.append(Conflict(opened.id, "record is no longer in its manifest"))
        elif now != sample["manifest_line"]:
            report.conflicts.append(Conflict(opened.id, "manifest record changed since `daad curate open`; "
                                             "re-open it and redo the edit"))
        else:
            curated = tuple(sorted(set(opened.curated) | set(changed)))
            report.changes.append(Change(opened, replace(after, curated=curated), tuple(changed)))
    if report.changes and not dry_run:
        _apply(report, dataset, who or os.environ.get("DAAD_CURATOR") or getpass.getuser())
    return report


def _edited(sample, opened: Record) -> tuple[Record, list[str]]:
    """The record as the curator left the sample, and the curated fields that differ."""
    record, changed = opened, []
    decisions = sorted(t for t in sample.tags if t in DECISION_TAGS)
    reasons = sorted(t[len(REASON_TAG):] for t in sample.tags if t.startswith(REASON_TAG))
    if len(decisions) > 1:
        raise ValueError(f"contradictory decision tags {decisions}")
    if decisions:
        status = DECISION_TAGS[decisions[0]]
        reason = "; ".join(reasons) or None
        if status is Status.REJECTED and reason is None:
            raise ValueError("a reject needs a reason tag, e.g. 'reason:blurry'")
        if status is Status.ACCEPTED:
            reason = None
        if (status, reason) != (opened.status, opened.reason):
            record = replace(record, status=status, reason=reason)
            changed.append("status")
    label = sample[CLASS_FIELD].label if sample[CLASS_FIELD] is not None else None
    if label is not None and label != opened.anomaly_class:
        record = replace(record, anomaly_class=check_class(label, allow_unmapped=False))
        changed.append("anomaly_class")
    rle = _edited_mask(sample)
    if rle is not None and (opened.mask is None or rle.counts != opened.mask.counts):
        if opened.width and (rle.width, rle.height) != (opened.width, opened.height):
            raise ValueError(f"new mask is {rle.width}x{rle.height}, the image is {opened.width}x{opened.height}")
        if rle.area() == 0:
            raise ValueError("new mask is empty")
        record = record.with_mask(rle)
        changed.append("mask")
    if record.status is Status.ACCEPTED and record.mask is None:
        raise ValueError("cannot accept a record without a mask")
    return record, changed


def _edited_mask(sample) -> RLE | None:
    seg = sample[MASK_FIELD]
    if seg is None:
        return None
    if seg.mask is not None:
        return RLE.encode(seg.mask)
    if seg.mask_path and seg.mask_path != sample["opened_mask_path"]:
        return RLE.encode(read_mask_file(seg.mask_path))
    return None


def _apply(report: SyncReport, dataset, who: str) -> None:
    by_origin: dict[str, list[Change]] = defaultdict(list)
    for change in report.changes:
        by_origin[change.before.origin].append(change)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    log = report.manifests_dir / LOG_FILE
    for origin, changes in sorted(by_origin.items()):
        path = report.manifests_dir / f"{origin}.jsonl"
        new = {c.record_id: c.after for c in changes}
        write_manifest(path, [new.get(r.id, r) for r in read_manifest(path)])
        with open(log, "a", encoding="utf-8") as f:
            for c in changes:
                entry = {"time": stamp, "who": who, "dataset": report.dataset, "manifest": path.name,
                         "id": c.record_id, "fields": list(c.fields), "diff": c.summary()}
                f.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
    for sample in dataset.select_by("record_id", list({c.record_id for c in report.changes})).iter_samples(
        autosave=True, progress=False
    ):
        after = next(c.after for c in report.changes if c.record_id == sample["record_id"])
        line = dumps(after)
        sample["manifest_line"] = line
        sample["fingerprint"] = fingerprint(line)
        sample["status"] = str(after.status)
        sample["reason"] = after.reason
        sample.tags = [t for t in sample.tags if not t.startswith(STATUS_TAG)] + [f"{STATUS_TAG}{after.status}"]
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
