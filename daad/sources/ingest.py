"""``daad ingest``: a loader's records -> ``manifests/<origin>.jsonl``, keeping curation.

Re-ingesting unchanged data rewrites nothing. For ids already in the manifest, the
fields a curator set (listed in ``Record.curated``: status/reason, anomaly_class,
mask) are kept from the manifest; everything else comes from the source. A record that
left the manifest and comes back gets its latest decisions from the curation journal
(:mod:`daad.curate.journal`), so curation survives any remove/re-add cycle.

Ingest refuses rather than destroys: a missing or empty root, a loader that finds no
record, or a run that would remove more than ``REMOVE_SHARE`` of an origin's records
(without ``allow_remove``) raise an :class:`IngestError` and write nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from daad.curate.journal import decisions, read_log, replay
from daad.errors import DaadError
from daad.loaders.base import Skipped
from daad.registry.manifest import dumps, read_manifest, write_manifest
from daad.record import Record
from daad.registry.roots import Roots

REMOVE_SHARE = 0.05
"""The share of an origin's records an ingest may remove without ``--allow-remove``."""

_CURATED_FIELDS = {
    "status": ("status", "reason"),
    "anomaly_class": ("anomaly_class",),
    "mask": ("mask", "width", "height", "bbox", "area"),
    "image": ("image", "phash", "width", "height"),  # pinned by `daad fetch`
}


class IngestError(DaadError):
    """An ingest was refused; nothing was written."""


class RootError(IngestError):
    """The root given to ``daad ingest`` is missing, not a folder, or empty."""

    def __init__(self, origin: str, root: str, problem: str) -> None:
        self.origin, self.root = origin, root
        super().__init__(
            f"{f'root {root!r} of {origin}' if root else f'a root of {origin}'} {problem}: nothing ingested, "
            f"manifests/{origin}.jsonl left as it is. "
            f"Run `daad ingest {origin} --root {origin}=PATH` with the folder as its authors publish it"
        )


class NoRecordsError(IngestError):
    """The loader found no record under the root: an empty manifest is never written."""

    def __init__(self, manifest: Path, plan: IngestPlan) -> None:
        self.plan = plan
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(plan.report.skipped.items())) or "none"
        super().__init__(
            f"{manifest.stem}: the loader found no records (skipped: {skipped}); {manifest} left as it is. "
            f"Check that --root is the origin's folder as its authors publish it and run `daad ingest {manifest.stem} --root {manifest.stem}=PATH`"
        )


class RemovalRefusedError(IngestError):
    """The ingest would remove more than ``REMOVE_SHARE`` of an origin's records."""

    def __init__(self, manifest: Path, plan: IngestPlan, before: int) -> None:
        self.plan, self.removed_ids = plan, plan.removed_ids
        n = len(plan.removed_ids)
        shown = ", ".join(plan.removed_ids[:5]) + (f" and {n - 5} more" if n > 5 else "")
        super().__init__(
            f"{manifest.stem}: this ingest would remove {n} of its {before} records ({shown}); nothing written. "
            f"Check --root; if they are really gone, run `daad ingest {manifest.stem} --root {manifest.stem}=PATH --allow-remove` "
            f"(curators' decisions stay in the curation journal and come back with the records)"
        )


COLUMNS = ("records", "added", "removed", "changed", "unchanged")


@dataclass
class IngestReport:
    accepted: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_items: list[dict] = field(default_factory=list)
    """Each skipped item: its id, file, reason and detail."""
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
            "skipped_items": self.skipped_items,
            "statuses": dict(sorted(self.statuses.items())),
            "unmapped": dict(sorted(self.unmapped.items())),
            "written": self.written,
        }

    def row(self) -> list[str]:
        """The counts of the ``daad ingest`` table, in ``COLUMNS`` order."""
        return [str(self.to_json()[c]) for c in COLUMNS]


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


@dataclass
class IngestPlan:
    """What an ingest would write: the report, the merged records and the ids it would remove."""

    report: IngestReport
    records: list[Record]
    removed_ids: list[str]

    def write(self, manifest: Path) -> IngestReport:
        """Write the manifest if anything changed (atomically)."""
        report = self.report
        if report.added or report.removed or report.changed or not manifest.exists():
            write_manifest(manifest, self.records)
            report.written = True
        return report


def plan_ingest(items: Iterable[Record | Skipped], manifest: Path, *, allow_remove: bool = False) -> IngestPlan:
    """Merge ``items`` with ``manifest`` (curation kept; the journalled decisions of records
    that come back re-applied) without writing anything.

    Raises :class:`NoRecordsError` when the loader found nothing, and
    :class:`RemovalRefusedError` when more than ``REMOVE_SHARE`` of the manifest's records
    would go and ``allow_remove`` is not set.
    """
    report = IngestReport()
    old = {r.id: r for r in read_manifest(manifest)} if manifest.exists() else {}
    journal = decisions(read_log(manifest.parent))
    merged: dict[str, Record] = {}
    for item in items:
        if isinstance(item, Skipped):
            report.skipped[item.reason] += 1
            report.skipped_items.append(
                {"id": item.id, "file": None if item.path is None else str(item.path), "reason": item.reason,
                 "detail": item.detail}
            )
            continue
        if item.id in merged:
            raise ValueError(f"loader yielded id {item.id!r} twice")
        if item.id in old:
            record = keep_curation(item, old[item.id])
        else:
            record = replay(item, journal[item.id]) if item.id in journal else item
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
    removed = sorted(set(old) - set(merged))
    report.removed = len(removed)
    plan = IngestPlan(report, list(merged.values()), removed)
    if not merged:
        raise NoRecordsError(manifest, plan)
    if len(removed) > int(len(old) * REMOVE_SHARE) and not allow_remove:
        raise RemovalRefusedError(manifest, plan, len(old))
    return plan


def ingest(items: Iterable[Record | Skipped], manifest: Path, *, allow_remove: bool = False) -> IngestReport:
    """Merge ``items`` into ``manifest`` and write it if anything changed (see :func:`plan_ingest`)."""
    manifest = Path(manifest)
    return plan_ingest(items, manifest, allow_remove=allow_remove).write(manifest)


def ingest_root(origin: str, roots: Roots, given: Mapping[str, Path] | None = None) -> Path:
    """The folder to ingest ``origin`` from, as every command finds an origin's root (``--root
    ORIGIN=PATH``, ``$DAAD_ROOT_<ORIGIN>``, the data dir). Raises :class:`RootError` when it
    is not given, missing or empty, or when the roots given name only other origins."""
    if given and origin not in given:
        text = ", ".join(f"{o}={p}" for o, p in given.items())
        raise RootError(origin, text, f"names origin {', '.join(map(repr, given))}, not {origin!r}")
    path = roots.get(origin)
    if path is None:
        raise RootError(origin, "", f"is not given (--root {origin}=PATH, or $DAAD_ROOT_{origin.upper()})")
    text = f"{origin}={path}"
    if not path.is_dir():
        raise RootError(origin, text, "does not exist" if not path.exists() else "is not a folder")
    if next(path.iterdir(), None) is None:
        raise RootError(origin, text, "is empty")
    return path
