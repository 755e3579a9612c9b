"""The curation journal, ``manifests/curation.log.jsonl``: every curator's decision, by record id.

``daad curate sync`` appends one entry per changed record *before* it writes the
manifest, with the values the curated fields take (``after``: status and reason, class,
mask RLE). The journal is what makes decisions survive: ``daad ingest`` re-applies the
latest decision of a record that left its manifest and came back, and a sync killed
between journal and manifest is finished by the next one. Appending is idempotent (an
entry whose values are already the record's latest is not written twice) and atomic
(the whole file is replaced, so a reader never sees half a line).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from daad.atomic import write_atomically
from daad.errors import DaadError
from daad.masks import RLE
from daad.record import Record
from daad.taxonomy import Status, check_class

LOG_FILE = "curation.log.jsonl"
REPLAYED = ("status", "anomaly_class", "mask")
"""The curated fields a journal entry carries values of."""


class CurationLogError(DaadError):
    """A line of the curation journal cannot be read; names the file and line."""


def log_path(manifests_dir: Path) -> Path:
    return Path(manifests_dir) / LOG_FILE


def read_log(manifests_dir: Path) -> list[dict[str, Any]]:
    """Every entry of the journal, oldest first (none when there is no journal)."""
    path = log_path(manifests_dir)
    return _entries(path, _read_bytes(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _entries(path: Path, data: bytes) -> list[dict[str, Any]]:
    """The entries of the journal text ``data`` read from ``path``."""
    text = data.decode("utf-8")
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CurationLogError(f"{path}:{lineno}: malformed JSON: {exc.msg}") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise CurationLogError(f"{path}:{lineno}: an entry must be an object with an 'id'")
        entries.append(entry)
    return entries


def curated_values(record: Record, fields: Iterable[str]) -> dict[str, Any]:
    """The journal form of ``record``'s values of the curated ``fields``."""
    values: dict[str, Any] = {}
    for name in fields:
        if name == "status":
            values["status"] = {"status": str(record.status), "reason": record.reason}
        elif name == "anomaly_class":
            values["anomaly_class"] = record.anomaly_class
        elif name == "mask" and record.mask is not None:
            values["mask"] = record.mask.to_json()
    return values


def append_entries(manifests_dir: Path, entries: Iterable[dict[str, Any]]) -> int:
    """Append ``entries`` (each with ``id`` and ``after``) to the journal; returns how many
    were new (an entry whose ``after`` is already its record's latest is skipped)."""
    path = log_path(manifests_dir)
    existing = _read_bytes(path)
    latest = {e["id"]: e.get("after") for e in _entries(path, existing)}
    new = []
    for entry in entries:
        if latest.get(entry["id"]) != entry["after"]:
            new.append(entry)
            latest[entry["id"]] = entry["after"]
    if new:
        lines = [json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in new]
        write_atomically(path, [existing, *lines])
    return len(new)


def decisions(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Record id -> the latest journalled value of each curated field."""
    state: dict[str, dict[str, Any]] = {}
    for entry in entries:
        after = entry.get("after")
        if isinstance(after, dict):  # entries written before values were journalled carry none
            state.setdefault(entry["id"], {}).update({k: v for k, v in after.items() if k in REPLAYED})
    return state


def replay(record: Record, values: dict[str, Any]) -> Record:
    """``record`` with the journalled ``values`` applied (and named in ``curated``).

    A mask whose size is not the record's image size is not applied (the source's image
    changed since the curator drew it), nor is ``accepted`` to a record without a mask."""
    applied = []
    if "anomaly_class" in values:
        record = replace(record, anomaly_class=check_class(values["anomaly_class"]))
        applied.append("anomaly_class")
    mask = values.get("mask")
    if mask is not None:
        rle = RLE.from_json(mask)
        if record.width is None or (rle.height, rle.width) == (record.height, record.width):
            record = record.with_mask(rle)
            applied.append("mask")
    if "status" in values and (record.mask is not None or values["status"]["status"] != Status.ACCEPTED):
        record = replace(record, status=Status(values["status"]["status"]), reason=values["status"]["reason"])
        applied.append("status")
    if not applied:
        return record
    return replace(record, curated=tuple(sorted(set(record.curated) | set(applied))))
