"""What a curator did to a sample in the App, read back as a record and the curated fields it changes.

- tag ``accept`` / ``reject`` / ``needs_review`` -> ``status`` (a ``reason:<why>`` tag
  sets ``reason``; a reject needs one);
- edit the ``anomaly_class`` label -> ``anomaly_class``;
- point ``ground_truth`` at a new mask file (``mask_path``) or set its in-memory
  ``mask`` -> a new RLE with its bbox and area.

``daad curate sync`` writes these edits; ``daad curate open`` refuses to drop a sample
that has any (see :func:`unsynced`).
"""

from __future__ import annotations

import json
from dataclasses import replace

from daad.curate.fields import CLASS_FIELD, MASK_FIELD, read_mask_file
from daad.masks import RLE
from daad.record import Record
from daad.taxonomy import Status, check_class

DECISION_TAGS = {"accept": Status.ACCEPTED, "reject": Status.REJECTED, "needs_review": Status.NEEDS_REVIEW}
REASON_TAG = "reason:"


def opened_record(sample) -> Record:
    """The record as it was when the sample was opened (its pinned manifest line)."""
    return Record.from_json(json.loads(sample["manifest_line"]))


def edited(sample, opened: Record) -> tuple[Record, list[str]]:
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
    rle = edited_mask(sample)
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


def edited_mask(sample) -> RLE | None:
    seg = sample[MASK_FIELD]
    if seg is None:
        return None
    if seg.mask is not None:
        return RLE.encode(seg.mask)
    if seg.mask_path and seg.mask_path != sample["opened_mask_path"]:
        return RLE.encode(read_mask_file(seg.mask_path))
    return None


def unsynced(sample) -> list[str]:
    """The curated fields a sample's edits change (``["unreadable"]`` for contradictory or
    incomplete ones); empty when it holds nothing to sync."""
    try:
        return edited(sample, opened_record(sample))[1]
    except ValueError:
        return ["unreadable"]
