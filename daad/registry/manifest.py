"""Manifests: ``manifests/<origin>.jsonl``, one record per line, sorted by id.

Lines are written with a fixed key order and separators, so that a git diff of a
manifest reads like a change log. Reading checks every line and fails with the file,
the line number and the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from daad.atomic import write_atomically
from daad.errors import ManifestError
from daad.masks import decode_runs
from daad.record import Record

SUFFIX = ".jsonl"
CHUNK = 64
"""Lines parsed together (their masks decoded in one go)."""


def dumps(record: Record) -> str:
    """One manifest line (no newline)."""
    return json.dumps(record.to_json(), ensure_ascii=False, separators=(", ", ": "))


def read_manifest(path: Path) -> Iterator[Record]:
    """Stream the records of one manifest, checking order, uniqueness and every field."""
    path = Path(path)
    order = IdOrder(path)
    for chunk in line_chunks(path):
        for (lineno, _), record in zip(chunk, parse_lines(path, chunk)):
            if isinstance(record, ManifestError):
                raise record
            order.check(lineno, record.id)
            yield record


def line_chunks(path: Path) -> Iterator[list[tuple[int, str]]]:
    """The lines of ``path`` with their numbers, ``CHUNK`` at a time (bytes that are not
    UTF-8 kept as surrogates, for :func:`parse_lines` to name)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = enumerate(f, start=1)
        while chunk := list(islice(lines, CHUNK)):
            yield chunk


def parse_lines(path: Path, lines: list[tuple[int, str]]) -> list[Record | ManifestError]:
    """The record, or the ``ManifestError`` naming the file and line, of each numbered line
    of manifest ``path`` (their masks' run lengths decoded together)."""
    objects: list[object] = []
    for lineno, line in lines:
        if not line.strip():
            objects.append(ManifestError(path, lineno, "blank line"))
            continue
        if not line.isascii() and not _is_utf8(line):
            objects.append(ManifestError(path, lineno, "invalid UTF-8 (manifests are UTF-8 text)"))
            continue
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError as exc:
            objects.append(ManifestError(path, lineno, f"malformed JSON: {exc.msg} at column {exc.colno}"))
    masks = [_counts(obj) for obj in objects]
    decoded = iter(decode_runs([c for c in masks if c is not None]))
    results: list[Record | ManifestError] = []
    for (lineno, _), obj, counts in zip(lines, objects, masks):
        if isinstance(obj, ManifestError):
            results.append(obj)
            continue
        try:
            results.append(Record.from_json(obj, next(decoded) if counts is not None else None))
        except ValueError as exc:
            rid = obj.get("id") if isinstance(obj, dict) else None
            results.append(ManifestError(path, lineno, f"{rid or 'record'}: {exc}"))
    return results


def _is_utf8(line: str) -> bool:
    """Whether ``line`` (read with ``surrogateescape``) was valid UTF-8."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _counts(obj: object) -> str | None:
    """The RLE string of a parsed line's mask, if it has one that can be decoded."""
    mask = obj.get("mask") if isinstance(obj, dict) else None
    counts = mask.get("counts") if isinstance(mask, dict) else None
    return counts if isinstance(counts, str) and counts.isascii() else None


class IdOrder:
    """Checks that the ids of a manifest's lines come sorted and unique."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous: str | None = None

    def check(self, lineno: int, record_id: str) -> None:
        previous, self.previous = self.previous, record_id
        if previous is None:
            return
        if record_id == previous:
            raise ManifestError(self.path, lineno, f"duplicate id {record_id!r}")
        if record_id < previous:
            raise ManifestError(
                self.path, lineno, f"id {record_id!r} is out of order (after {previous!r}); manifests are sorted by id"
            )


def write_manifest(path: Path, records: Iterable[Record]) -> int:
    """Write ``records`` sorted by id, atomically and durably (:func:`daad.atomic.write_atomically`).
    Returns the count.

    Raises ``ValueError`` on duplicate ids: nothing is written then.
    """
    path = Path(path)
    ordered = sorted(records, key=lambda r: r.id)
    for a, b in zip(ordered, ordered[1:]):
        if a.id == b.id:
            raise ValueError(f"duplicate id {a.id!r}; nothing written to {path}")
    write_atomically(path, (f"{dumps(record)}\n" for record in ordered))
    return len(ordered)


def manifest_paths(manifests_dir: Path) -> list[Path]:
    """Every origin manifest in ``manifests_dir``, sorted by name (logs such as
    ``curation.log.jsonl`` are not manifests)."""
    return sorted(
        p
        for p in Path(manifests_dir).glob(f"*{SUFFIX}")
        if not p.name.startswith(".") and not p.name.endswith(f".log{SUFFIX}") and p.is_file()
    )


def count_lines(path: Path) -> int:
    """The number of lines of ``path`` (for progress bars)."""
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def downloaded_manifests_dir(data: Path) -> Path:
    """The manifests written at download time under the data dir ``data``, one per origin
    pinned by its archive's sha256 (see :mod:`daad.sources.archive_sources`)."""
    return Path(data) / "manifests"


def default_manifests_dir() -> Path:
    """``$DAAD_MANIFESTS``, else the registry shipped with daad (``daad/manifests``: in a
    checkout, a link to its ``manifests/`` folder; in a wheel, a copy)."""
    env = os.environ.get("DAAD_MANIFESTS")
    if env:
        return Path(env).expanduser()
    return (Path(__file__).parents[1] / "manifests").resolve()
