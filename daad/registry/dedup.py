"""Registry-wide duplicates: a record whose image is a near copy of another record's image,
with an anomaly of the same class.

``daad dedup`` marks such a record ``duplicate_of: <id of the kept record>`` in its
manifest; builds and views leave it out and the card counts it (``duplicate:<origin>``).
Near copies are found as for the leakage guard (:mod:`daad.registry.neardup`): the record's pHash
within :data:`~daad.registry.neardup.THRESHOLD` bits of one of the sixteen dihedral and crop
variant hashes of a kept record, confirmed by the fine signatures under that variant and then by
the fine detail of both images (:func:`~daad.registry.neardup.detail_correlation`: a copy is the same
view of the same surface; another road frame or tile of one kind, which the first two checks pass, is
not). The detail thumbnails are computed only for pairs the signatures confirm, the query's once per
record, a candidate's kept for the :data:`DETAIL_CACHE` last. Over the 12,979 records of the
committed manifests with their real files (CPU time): without the detail check 232 s, 444 MiB, 1,985
marks, 1,352 of them Cracks and Potholes frames within the source; with it 397 s, 591 MiB, 1,347
records refused, 37 such frames left marked (26 of them the next frame).

Which record is kept is decided by the catalogue (:func:`origin_priority`): an origin is
kept over every origin whose ``derived_from`` names it, directly or through others (the
original publisher over a re-release: ``sd_saliency_900`` over ``neu_seg``, which says
``derived_from = ["sd_saliency_900"]``); between origins that do not derive from each
other, an existing dataset is kept over the authors' photos, and those over online
finds (web copies of dataset images); then the origin id decides. Origins are visited
in that order; a record is compared with the records of the origins before it and with
those of its own origin that come before it by id and point to another image file
(NEU-Seg publishes most of its new images four times, rotated; SD-saliency-900 holds
Pa_101 and Pa_105 byte for byte; several records of one file, one per class of its mask,
are never duplicates of each other). A copy of a record that is
itself a duplicate is marked with the record kept for that picture.

Origins named ``fixed`` (``daad download`` passes those with a committed manifest, which it
never rewrites) keep the marks they have and are visited first: a source whose manifest was
written at download time is compared with all of them, and its copies of their records are
marked, whatever the catalogue would keep otherwise.

Only accepted and needs-review records take part (a rejected record neither keeps nor
loses). A record whose image, or every candidate's, cannot be read here keeps the mark
it had (``unchecked`` in the report). Each manifest that changes is rewritten atomically.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from daad.registry.catalogue import Catalogue, CatalogueError
from daad.errors import DaadError, PathEscapeError, RecordFileError, RootNotFoundError
from daad.images import decode_image
from daad.registry.manifest import read_manifest, write_manifest
from daad.registry.exclusion import EvaluationHashes
from daad.registry.neardup import (
    DETAIL_THRESHOLD, FINE_THRESHOLD, VARIANTS, HashIndex, detail_correlation, detail_thumbnails, fine_distance,
    fine_signature, parse_hash, query_detail, query_signature, variant_hashes,
)
from daad.record import Record
from daad.registry.registry import Registry
from daad.taxonomy import Source, Status

SOURCE_ORDER = (Source.EXISTING_DATASET, Source.REALITY_PHOTO, Source.ONLINE_SEARCH)
"""Between unrelated origins, the source kind kept first."""
TAKES_PART = (Status.ACCEPTED, Status.NEEDS_REVIEW)
DETAIL_CACHE = 1024
"""Detail thumbnails kept of the most recently compared candidates (128 KiB each)."""


class DedupError(DaadError):
    """The catalogue's ``derived_from`` entries form a cycle."""


def origin_priority(catalogue: Catalogue, origins: Iterable[str]) -> list[str]:
    """``origins`` in the order their records are kept (see the module docstring)."""

    @cache
    def depth(origin: str, seen: tuple[str, ...] = ()) -> int:
        if origin in seen:
            raise DedupError(f"derived_from forms a cycle: {' -> '.join((*seen, origin))} (sources.toml)")
        parents = catalogue[origin].derived_from if origin in catalogue else ()
        return 1 + max((depth(p, (*seen, origin)) for p in parents), default=-1)

    def source_rank(origin: str) -> int:
        try:
            return SOURCE_ORDER.index(catalogue[origin].source)
        except (CatalogueError, ValueError):
            return len(SOURCE_ORDER)

    return sorted(set(origins), key=lambda o: (depth(o), source_rank(o), o))


@dataclass
class DedupReport:
    """What one run found: every mark, per-origin counts and records it could not check."""

    marks: dict[str, str] = field(default_factory=dict)
    """Record id -> id of the kept record it is a near copy of."""
    distances: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    """Record id -> (hash bits apart, share of fine signs apart, detail correlation) of its mark."""
    rejected: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Record id -> (candidate, detail correlation) of a record left unmarked because the detail check
    refused every candidate the hash and fine signature confirmed (the best refused one)."""
    records: Counter = field(default_factory=Counter)
    """Origin -> records taking part."""
    unchecked: dict[str, str] = field(default_factory=dict)
    """Record id -> why it could not be checked (its previous mark, if any, is kept)."""
    added: int = 0
    removed: int = 0
    written: list[str] = field(default_factory=list)

    def refused(self) -> Counter:
        """Origin -> records the detail check left unmarked."""
        return Counter(rid.split("/", 1)[0] for rid in self.rejected)

    def duplicates(self) -> Counter:
        """(origin, origin of the kept record) -> duplicates."""
        return Counter((rid.split("/", 1)[0], kept.split("/", 1)[0]) for rid, kept in self.marks.items())


class _Images:
    """Variant hashes, fine and query signatures of record images, read once per image (by sha256);
    the query signature (25 crops) only for records that have candidates, the detail thumbnails only
    for pairs the signatures confirm (the query's for the record compared last, a candidate's for the
    :data:`DETAIL_CACHE` last compared)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: dict[str, tuple[list[int], np.ndarray] | str] = {}
        self._queries: dict[str, np.ndarray] = {}
        self._details: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_detail: tuple[str, np.ndarray] | None = None

    def _read(self, record: Record) -> Image.Image:
        path, data = self.registry.read_image(record)
        return decode_image(data, record.id, path)

    def get(self, record: Record) -> tuple[list[int], np.ndarray] | str:
        """``(variant hashes, fine signature)`` of ``record``'s image, or why it cannot be read."""
        key = record.image.sha256 or record.id
        if key not in self._cache:
            try:
                image = self._read(record)
                self._cache[key] = (variant_hashes(image), fine_signature(image))
            except (RecordFileError, PathEscapeError, RootNotFoundError) as exc:
                self._cache[key] = str(exc)
        return self._cache[key]

    def query(self, record: Record) -> np.ndarray:
        """The :func:`~daad.registry.neardup.query_signature` of a record whose image :meth:`get` read."""
        key = record.image.sha256 or record.id
        if key not in self._queries:
            self._queries[key] = query_signature(self._read(record))
        return self._queries[key]

    def detail(self, kept: Record, variant: int, record: Record) -> float:
        """:func:`~daad.registry.neardup.detail_correlation` of ``record``'s image with ``kept``'s
        under ``variant``."""
        key = kept.image.sha256 or kept.id
        if key in self._details:
            self._details.move_to_end(key)
        else:
            self._details[key] = detail_thumbnails(self._read(kept))
            if len(self._details) > DETAIL_CACHE:
                self._details.popitem(last=False)
        query = record.image.sha256 or record.id
        if self._query_detail is None or self._query_detail[0] != query:
            self._query_detail = (query, query_detail(self._read(record)))
        return detail_correlation(self._details[key], variant, self._query_detail[1])


@dataclass
class _Seen:
    """Records already compared (of one anomaly class), with their variant hashes and fine signatures."""

    records: list[Record] = field(default_factory=list)
    variants: list[list[int]] = field(default_factory=list)
    fine: list[np.ndarray] = field(default_factory=list)

    def add(self, record: Record, variants: list[int], fine: np.ndarray) -> None:
        self.records.append(record)
        self.variants.append(variants)
        self.fine.append(fine)

    def hashes(self) -> EvaluationHashes:
        return EvaluationHashes(
            tuple(r.id for r in self.records), np.array(self.variants, dtype=np.uint64), np.array(self.fine, dtype=bool)
        )


def find_duplicates(
    registry: Registry, progress: bool = False, fixed: frozenset[str] = frozenset()
) -> tuple[DedupReport, dict[str, list[Record]]]:
    """The marks of the whole registry, and its records by origin (as read); ``fixed`` origins keep theirs."""
    by_origin = {path.stem: list(read_manifest(path)) for path in registry.manifests()}
    report = DedupReport()
    images = _Images(registry)
    seen: dict[str, _Seen] = {}  # per anomaly class, every record compared so far, kept or marked
    kept_as: dict[str, str] = {}  # record id -> id of the record kept for its picture (itself if kept)
    total = sum(len(v) for v in by_origin.values())
    bar = tqdm(total=total, unit="rec", desc="dedup", disable=not progress)
    ordered = origin_priority(registry.catalogue, by_origin)
    for origin in [o for o in ordered if o in fixed] + [o for o in ordered if o not in fixed]:
        records = [r for r in by_origin[origin] if r.status in TAKES_PART and r.phash is not None]
        report.records[origin] = len(records)
        if origin in fixed:
            _keep_fixed(records, images, seen, kept_as, report)
            bar.update(len(records))
            continue
        own = [images.get(r) for r in records]
        for record, got in zip(records, own):
            if isinstance(got, str):
                report.unchecked[record.id] = got
        readable = [i for i, got in enumerate(own) if not isinstance(got, str)]
        queries = [parse_hash(r.phash) for r in records]
        fine_of = {i: own[i][1] for i in readable}

        def query_of(i: int) -> np.ndarray:
            return images.query(records[i])

        def same_view(i: int, other: Record, variant: int) -> bool:
            """The detail check; a refused candidate is noted (the best refused one per record)."""
            corr = images.detail(other, variant, records[i])
            detail[i, other.id] = corr
            if corr < DETAIL_THRESHOLD and corr > refused.get(i, ("", -1.0))[1]:
                refused[i] = (other.id, corr)
            return corr >= DETAIL_THRESHOLD

        detail: dict[tuple[int, str], float] = {}
        refused: dict[int, tuple[str, float]] = {}
        cross: dict[int, tuple[Record, float, int]] = {}
        for cls in {r.anomaly_class for r in records} & set(seen):
            todo = [i for i in readable if records[i].anomaly_class == cls]
            earlier = seen[cls].hashes()
            found = earlier.matches(HashIndex(earlier.hashes), [queries[i] for i in todo], lambda q: query_of(todo[q]),
                                    lambda q, image, variant: same_view(todo[q], seen[cls].records[image], variant))
            cross |= {i: (seen[cls].records[m.image], m.share, m.bits) for i, m in zip(todo, found) if m is not None}
        same = _candidates(HashIndex(np.array([own[i][0] for i in readable], dtype=np.uint64).reshape(-1)), queries)
        for i, record in enumerate(records):
            bar.update()
            if i not in fine_of:
                if record.duplicate_of is not None:
                    report.marks[record.id] = record.duplicate_of
                continue
            if i in cross:  # another origin's record first (the original publisher)
                original, share, bits = cross[i]
            else:  # an earlier record (by id) of this origin, of the same class, with another image file
                found = []
                for h in same.get(i, ()):
                    j = readable[h // VARIANTS]
                    other = records[j]
                    if j < i and other.anomaly_class == record.anomaly_class and other.image != record.image:
                        found.append((fine_distance(fine_of[j], h % VARIANTS, query_of(i)), other.id, j, h % VARIANTS))
                confirmed = next(
                    (f for f in sorted(found) if f[0] <= FINE_THRESHOLD and same_view(i, records[f[2]], f[3])), None
                )
                if confirmed is None:
                    kept_as[record.id] = record.id
                    if i in refused:
                        report.rejected[record.id] = refused[i]
                    continue
                share, _, j, _ = confirmed
                original, bits = records[j], _bits(records[j], record)
            kept_as[record.id] = kept_as[original.id]
            report.marks[record.id] = kept_as[original.id]
            report.distances[record.id] = (bits, share, detail[i, original.id])
        for i in readable:
            seen.setdefault(records[i].anomaly_class, _Seen()).add(records[i], *own[i])
    bar.update(total - bar.n)
    bar.close()
    return report, by_origin


def _keep_fixed(records: list[Record], images: _Images, seen: dict[str, _Seen], kept_as: dict[str, str],
                report: DedupReport) -> None:
    """A fixed origin's records keep their marks; its kept ones join the records later origins are
    compared with (a marked one shows the picture of a record already there, so it is not read)."""
    for record in records:
        kept_as[record.id] = kept_as.get(record.duplicate_of or "", record.duplicate_of or record.id)
        if record.duplicate_of is not None:
            report.marks[record.id] = record.duplicate_of
            continue
        got = images.get(record)
        if isinstance(got, str):
            report.unchecked[record.id] = got
        else:
            seen.setdefault(record.anomaly_class, _Seen()).add(record, *got)


def _candidates(index: HashIndex, queries: list[int]) -> dict[int, list[int]]:
    """Query index -> indexed hashes within the threshold."""
    pairs = index.pairs(queries)
    found: dict[int, list[int]] = {}
    for q, hit in zip(pairs.query.tolist(), pairs.index.tolist()):
        found.setdefault(q, []).append(hit)
    return found


def _bits(original: Record, copy: Record) -> int:
    """pHash bits between two records' stored hashes (their plain images)."""
    return int(parse_hash(original.phash) ^ parse_hash(copy.phash)).bit_count()


def dedup(
    registry: Registry, dry_run: bool = False, progress: bool = False, fixed: frozenset[str] = frozenset()
) -> DedupReport:
    """Find the duplicates and, unless ``dry_run``, write the marks into the manifests they were
    read from (never into a ``fixed`` origin's)."""
    report, by_origin = find_duplicates(registry, progress, fixed)
    paths = {path.stem: path for path in registry.manifests()}
    for origin, records in by_origin.items():
        if origin in fixed:
            continue
        changed = False
        marked = []
        for record in records:
            mark = report.marks.get(record.id)
            if record.status not in TAKES_PART or record.phash is None:
                mark = record.duplicate_of
            if mark != record.duplicate_of:
                changed = True
                report.added += mark is not None
                report.removed += record.duplicate_of is not None
                record = replace(record, duplicate_of=mark)
            marked.append(record)
        if changed and not dry_run:
            write_manifest(paths[origin], marked)
            report.written.append(origin)
    return report
