"""``daad fetch``: download the images of URL records into the local cache.

Each record whose ``image.url`` is set and whose image is not in the cache yet is
downloaded (through :mod:`daad.sources.http`), checked to be a decodable image, stored at
``roots.fetched_image_path(sha256)`` and pinned: the first success writes the sha256
(and phash, size) into the manifest and moves the record from ``needs_image`` to
``needs_mask``. A pinned record is verified instead: a cached file with the pinned hash is
kept, otherwise the URL is fetched again and must give the same bytes.

A failure never stops the run. A verdict on the URL is written: the record keeps
``needs_image`` with ``reason`` set to ``dead_link`` (the server answered 404 or 410),
``http_error``, ``not_an_image``, ``too_large`` or ``sha256_mismatch`` (the URL now serves
other bytes), and the fields fetch sets are marked curated, so re-ingesting the source
keeps them. No answer is not a verdict: offline, DNS, connection refused or reset, a
timeout, or a server error (5xx, 429) is a ``network_error``, counted but written nowhere,
and retried by the next run (:func:`failure_reason`). A run in which every download
failed says so (:attr:`FetchReport.all_failed`; ``daad fetch`` exits 1).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from daad.sources.http import DownloadResult, download
from daad.errors import RecordFileError
from daad.images import decode_image, perceptual_hash, read_verified
from daad.registry.manifest import manifest_paths, read_manifest, write_manifest
from daad.record import Record
from daad.registry.roots import cache_dir, fetched_image_path
from daad.taxonomy import Status

MAX_BYTES = 20 * 1024 * 1024
"""Default cap on one image (bytes)."""
FETCH_CURATED = ("image", "status")
DEADLINE_TIMEOUTS = 4
"""One record's download, retries included, ends within this many timeouts per attempt."""
SAVE_EVERY = 10.0
"""Seconds between saves of a manifest while its images are fetched."""
DEAD_LINK, NETWORK_ERROR = "dead_link", "network_error"
GONE = (404, 410)
"""The answers that make a link dead."""
NO_ANSWER = frozenset({"dead_link", "timeout", "too_slow", "network_error", "resume_mismatch", "server_error"})
"""Reasons of :mod:`daad.sources.http` that, without a 404/410, mean the server gave no usable answer."""


def failure_reason(result: DownloadResult) -> str:
    """The label of a failed download: ``dead_link`` only for an answered 404/410;
    ``network_error`` (retryable, not a verdict) for no answer (offline, DNS, refused, reset,
    timeout) or a server error (5xx, 429); else :mod:`daad.sources.http`'s own reason."""
    status = result.http_status
    if status in GONE:
        return DEAD_LINK
    if result.reason in NO_ANSWER or (status is not None and (status >= 500 or status == 429)):
        return NETWORK_ERROR
    return result.reason or NETWORK_ERROR


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    record_id: str
    reason: str | None
    """``None``: fetched (or verified in the cache); else the failure key."""
    detail: str = ""
    sha256: str | None = None
    cached: bool = False


@dataclass
class FetchReport:
    fetched: int = 0
    verified: int = 0
    """Pinned records whose cached file matched (nothing downloaded)."""
    failed: Counter = field(default_factory=Counter)
    outcomes: list[FetchOutcome] = field(default_factory=list)
    manifests_written: list[str] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        """Records were tried and not one was fetched or verified."""
        return bool(self.failed) and not (self.fetched or self.verified)

    def to_json(self) -> dict:
        return {
            "fetched": self.fetched,
            "verified": self.verified,
            "failed": dict(sorted(self.failed.items())),
            "all_failed": self.all_failed,
            "manifests_written": self.manifests_written,
        }


def wants_fetch(record: Record) -> bool:
    """A URL record not rejected: fetched when unpinned or missing, verified when cached."""
    return record.image.url is not None and record.status is not Status.REJECTED


def _partial_path(record: Record) -> Path:
    """Per record, so that two records with the same URL never share a temp file."""
    return cache_dir() / "partial" / hashlib.sha256(f"{record.id}\n{record.image.url}".encode()).hexdigest()


def fetch_one(
    record: Record, *, max_bytes: int, timeout: float, retries: int, backoff: float
) -> tuple[FetchOutcome, Record]:
    """Download, check and cache one record's image; returns the outcome and the updated record."""
    pinned = record.image.sha256
    if pinned is not None and fetched_image_path(pinned).is_file():
        try:
            read_verified(fetched_image_path(pinned), pinned, record.id)
            return FetchOutcome(record.id, None, sha256=pinned, cached=True), record
        except RecordFileError:
            fetched_image_path(pinned).unlink(missing_ok=True)
    temp = _partial_path(record)
    result: DownloadResult = download(
        record.image.url, temp, sha256=pinned, max_bytes=max_bytes, timeout=timeout, retries=retries, backoff=backoff,
        deadline=DEADLINE_TIMEOUTS * timeout * (retries + 1),
    )
    if not result.ok:
        return _failed(record, failure_reason(result), result.detail)
    try:
        data = temp.read_bytes()
        if result.content_type in ("text/html", "application/xhtml+xml"):
            raise RecordFileError(record.id, record.image.url, "not_an_image", f"served {result.content_type}")
        image = decode_image(data, record.id, record.image.url)
    except RecordFileError as exc:
        temp.unlink(missing_ok=True)
        return _failed(record, "not_an_image", exc.detail)
    dest = fetched_image_path(result.sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, dest)
    status = Status.NEEDS_MASK if record.mask is None else record.status
    updated = replace(
        record,
        image=replace(record.image, sha256=result.sha256),
        phash=perceptual_hash(image),
        width=image.width if record.mask is None else record.width,
        height=image.height if record.mask is None else record.height,
        status=status,
        reason=None if record.status is Status.NEEDS_IMAGE else record.reason,
        curated=tuple(sorted(set(record.curated) | set(FETCH_CURATED))),
    )
    return FetchOutcome(record.id, None, sha256=result.sha256), updated


def _failed(record: Record, reason: str, detail: str) -> tuple[FetchOutcome, Record]:
    """The outcome, and the record with the verdict written (unchanged for a ``network_error``)."""
    if reason == NETWORK_ERROR:
        return FetchOutcome(record.id, reason, detail), record
    status = Status.NEEDS_IMAGE if record.status in (Status.NEEDS_IMAGE, Status.NEEDS_MASK) else record.status
    updated = replace(record, status=status, reason=reason, curated=tuple(sorted(set(record.curated) | {"status"})))
    return FetchOutcome(record.id, reason, detail), updated


def fetch(
    manifests_dir: Path,
    origins: Iterable[str] | None = None,
    *,
    concurrency: int = 8,
    max_bytes: int = MAX_BYTES,
    timeout: float = 20.0,
    retries: int = 2,
    backoff: float = 0.5,
    limit: int | None = None,
    progress: bool = True,
    save_every: float = SAVE_EVERY,
) -> FetchReport:
    """Fetch every URL record of the selected manifests; rewrite each manifest that changed,
    every ``save_every`` seconds while its records are fetched and once at the end (so an
    interrupted run keeps what it pinned)."""
    wanted = set(origins or ())
    report = FetchReport()
    paths = [p for p in manifest_paths(manifests_dir) if not wanted or p.stem in wanted]
    fetch_record = partial(fetch_one, max_bytes=max_bytes, timeout=timeout, retries=retries, backoff=backoff)
    for path in paths:
        if _fetch_manifest(path, fetch_record, report, concurrency, limit, progress, save_every):
            report.manifests_written.append(path.name)
    return report


def _fetch_manifest(path: Path, fetch_record, report: FetchReport, concurrency: int, limit: int | None,
                    progress: bool, save_every: float) -> bool:
    """Fetch the URL records of one manifest, saving it as records are pinned; whether it was written."""
    records = list(read_manifest(path))
    todo = [i for i, r in enumerate(records) if wants_fetch(r)][:limit]
    if not todo:
        return False
    changed = written = False
    saved_at = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool, tqdm(
        total=len(todo), desc=f"fetch {path.stem}", unit="img", disable=not progress
    ) as bar:
        pending = {pool.submit(fetch_record, records[i]): i for i in todo}
        outcomes: dict[int, FetchOutcome] = {}
        try:
            while pending:
                done, _ = wait(pending, timeout=save_every, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    index = pending.pop(future)
                    outcomes[index], updated = future.result()
                    changed |= updated != records[index]
                    records[index] = updated
                    bar.update()
                if changed and time.monotonic() - saved_at >= save_every:
                    write_manifest(path, records)
                    changed, written, saved_at = False, True, time.monotonic()
        finally:
            if changed:  # what was pinned is kept, however the run ends
                write_manifest(path, records)
                written = True
            for future in pending:
                future.cancel()
            for index in sorted(outcomes):
                _count(report, outcomes[index])
    return written


def _count(report: FetchReport, outcome: FetchOutcome) -> None:
    report.outcomes.append(outcome)
    if outcome.reason is not None:
        report.failed[outcome.reason] += 1
    elif outcome.cached:
        report.verified += 1
    else:
        report.fetched += 1
