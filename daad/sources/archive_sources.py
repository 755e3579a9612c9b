"""Download and prepare: fetch the openly published sources into the data directory.

Like TensorFlow Datasets' ``download_and_prepare``: for each origin without a root, the
archive named in ``manifests/downloads.toml`` (pinned to an immutable revision) is
downloaded with :mod:`daad.sources.http`, its ``subpath`` is unpacked safely
(:mod:`daad.sources.archives`) into a temp folder and checked, and only then is the folder renamed
to ``<data dir>/<origin>``, where :class:`daad.registry.roots.Roots` finds it. A source is therefore
either absent or complete, never half unpacked. A source is pinned one of two ways:

- **a committed manifest** (GitHub archives, which are not byte-stable): every image the
  origin's ``manifests/<origin>.jsonl`` names is checked against its sha256;
- **the archive's sha256** (``sha256`` in ``downloads.toml``; plain archive URLs such as VisA,
  BTAD, KolektorSDD, MVTec AD; ``md5`` where only that is published, MVTec 3D-AD): the
  download is refused unless its bytes match, and the
  manifest is written here, from the verified archive, by the origin's loader, into
  ``<data dir>/manifests/<origin>.jsonl``, where :class:`daad.registry.registry.Registry` finds it beside
  the committed ones. Same archive, same manifest bytes. It is written (atomically) before
  the folder is renamed into place, so a crash between the two leaves a manifest whose root
  is missing (``daad build`` downloads it again), never data without a manifest. A native label
  the catalogue does not list fails the download, unless its entry says ``unlisted_classes =
  "unmapped"`` (3D-ADAM, whose defect folders could not be read here): then its records are
  unmapped, and the outcome and the state file name and count those labels.

A source published as several archives (AutoVI's six zips: ``[[<origin>.parts]]`` in
``downloads.toml``) has each one downloaded, checked against its own pin and unpacked into the
same temp folder (a path two archives both hold is refused) before the one rename; if any fails,
none of them is kept.

Layout of the data directory::

    <data dir>/<origin>/               the source as its authors publish it
    <data dir>/manifests/<origin>.jsonl  manifest written at download time (archive-pinned sources)
    <data dir>/.daad/<origin>.json     state: url, subpath, files verified or manifest written, when
    <data dir>/.daad/archives/         archives being downloaded (removed once unpacked)
    <data dir>/.daad/tmp-<origin>-*    unpacking in progress (removed on success or error)

Licences: a source whose licence is non-commercial (``commercial_use = false`` in the
catalogue, or an ``-NC`` licence), custom (``LicenseRef-...``), ``unknown`` or not
stated is fetched only once the user accepts it (``--accept-licence ID``,
``$DAAD_ACCEPT_LICENCES`` or ``accept_licences`` in ``~/.config/daad/config.toml``);
a source whose licence the :class:`~daad.licences.LicencePolicy` excludes (e.g.
``commercial``) is skipped. Sources whose authors require
accepting terms on a website are never fetched: the summary says how to point daad at
a manual download.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from daad.tomlfile import read_toml
from daad.atomic import write_atomically
from daad.sources.archives import ArchiveError, CorruptArchiveError, unpack
from daad.registry.catalogue import SourceEntry
from daad.registry.dedup import dedup
from daad.sources.http import download
from daad.errors import DaadError, PathEscapeError, RecordFileError
from daad.sources.url_images import failure_reason
from daad.images import read_verified, sha256_bytes, sha256_file
from daad.sources.ingest import IngestReport, ingest
from daad.licences import UNKNOWN, LicencePolicy
from daad.loaders import get_loader
from daad.record import Record
from daad.registry.registry import Registry
from daad.registry.roots import resolve_in_root

ACCEPT_ENV = "DAAD_ACCEPT_LICENCES"
BASE_URL_ENV = "DAAD_DOWNLOAD_BASE_URL"
CONFIG_ENV = "DAAD_CONFIG"
STATE_DIR = ".daad"
MAX_ARCHIVE_BYTES = 16 << 30
MAX_UNPACKED_BYTES = 32 << 30

PRESENT, DOWNLOADED, SKIPPED, FAILED = "present", "downloaded", "skipped", "failed"


class SourceDownloadError(DaadError):
    """A source could not be downloaded, unpacked or verified; nothing was left in the data dir."""

    def __init__(self, origin: str, detail: str) -> None:
        self.origin, self.detail = origin, detail
        super().__init__(f"{origin}: {detail}")


class ArchiveLayoutError(SourceDownloadError):
    """The verified archive cannot be read by its origin's loader (fetching it again would not help)."""


@dataclass(frozen=True)
class PrepareOptions:
    """Where to put sources, which licences the user accepted, and network limits."""

    data: Path
    accepted: frozenset[str] = frozenset()
    policy: LicencePolicy = field(default_factory=LicencePolicy.everything)
    base_url: str | None = None
    timeout: float = 60.0
    """Seconds any connection or read may stall."""
    retries: int = 3
    max_archive_bytes: int = MAX_ARCHIVE_BYTES
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES
    progress: bool = True


@dataclass
class Outcome:
    """What happened to one origin."""

    origin: str
    status: str
    detail: str = ""
    files: int = 0
    duplicates: int = 0
    """Records of a manifest written now that ``daad dedup`` marked as near copies of other records."""


@dataclass
class PrepareReport:
    """The outcome of every origin considered, in order."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ready(self) -> list[str]:
        """Origins whose files are on disk (present before, or downloaded now)."""
        return [o.origin for o in self.outcomes if o.status in (PRESENT, DOWNLOADED)]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    def to_json(self) -> list[dict]:
        return [asdict(o) for o in self.outcomes]


def needs_acceptance(entry: SourceEntry) -> bool:
    """True unless the catalogue says the licence allows commercial use and it is a plain,
    stated, non-``-NC`` licence (custom ``LicenseRef-`` and ``unknown`` always need it)."""
    licence = entry.licence
    custom = licence == UNKNOWN or licence.startswith("LicenseRef-") or "-NC" in licence.upper()
    return custom or entry.commercial_use is not True


def config_path() -> Path:
    """``$DAAD_CONFIG``, else ``$XDG_CONFIG_HOME/daad/config.toml`` (``~/.config`` by default)."""
    if env := os.environ.get(CONFIG_ENV):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "daad" / "config.toml"


def accepted_licences(given: Iterable[str] = ()) -> frozenset[str]:
    """Licences accepted on the command line, in ``$DAAD_ACCEPT_LICENCES`` (comma-separated)
    and in the config file's ``accept_licences`` list."""
    accepted = {v.strip() for v in given if v.strip()}
    accepted |= {v.strip() for v in os.environ.get(ACCEPT_ENV, "").split(",") if v.strip()}
    path = config_path()
    config = read_toml(path, DaadError) or {}
    values = config.get("accept_licences", [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DaadError(f"{path}: accept_licences must be a list of licence ids")
    return frozenset(accepted | set(values))


def archive_url(url: str, base_url: str | None = None) -> str:
    """``url``, or its path under ``base_url`` (``$DAAD_DOWNLOAD_BASE_URL``) for mirrors and tests."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    if not base:
        return url
    return base.rstrip("/") + urlsplit(url).path


def prepare(registry: Registry, origins: Iterable[str], options: PrepareOptions) -> PrepareReport:
    """Make every origin in ``origins`` available locally; failures are reported, not raised."""
    report = PrepareReport()
    origins = list(origins)
    for k, origin in enumerate(origins):
        later = {url for o in origins[k + 1:] for url in _urls(registry.catalogue[o], options)}
        try:
            report.outcomes.append(prepare_source(registry, registry.catalogue[origin], options, shared=later))
        except SourceDownloadError as exc:
            report.outcomes.append(Outcome(origin, FAILED, exc.detail))
    for origin in origins:  # an archive kept for a later origin that then did not unpack it
        _remove(_archive_paths(registry.catalogue[origin], options))
    written = [o for o in report.outcomes if o.status == DOWNLOADED and registry.committed_manifest(o.origin) is None]
    if written:
        mark_duplicates(registry, written, options)
    return report


def mark_duplicates(registry: Registry, written: list[Outcome], options: PrepareOptions) -> None:
    """Run ``daad dedup`` over the registry once manifests were written at download time, so that no
    build counts a cross-origin copy; committed manifests are never rewritten (their origins are
    ``fixed``: a downloaded record that copies one of theirs is the one marked)."""
    fixed = frozenset(p.stem for p in registry.manifests() if registry.committed_manifest(p.stem) is not None)
    marks = dedup(registry, fixed=fixed, progress=options.progress).marks
    for outcome in written:
        outcome.duplicates = sum(rid.split("/", 1)[0] == outcome.origin for rid in marks)


def prepare_source(
    registry: Registry, entry: SourceEntry, options: PrepareOptions, shared: Collection[str] = frozenset()
) -> Outcome:
    """Present, downloaded now, or skipped (with why); raises :class:`SourceDownloadError`. An archive
    whose URL is in ``shared`` (another origin of the same run unpacks it too: CRACK500 and
    AsphaltCrack300 are two folders of one repository) is kept for it, not downloaded twice."""
    root = registry.roots.get(entry.id)
    target = options.data / entry.id
    if root is not None:
        if not registry.manifests([entry.id]):
            return Outcome(entry.id, PRESENT, f"found at {root}, but it has no manifest: run "
                                              f"`daad ingest {entry.id} --root {root}` to write one")
        if root != target:
            return Outcome(entry.id, PRESENT, f"root given: {root}")
        state = _state_path(options.data, entry.id)
        return Outcome(entry.id, PRESENT, "downloaded earlier" if state.exists() else f"found in {options.data}")
    if registry.manifests([entry.id]) and not any(r.image.path for r in registry.records([entry.id])):
        return Outcome(entry.id, PRESENT, "no local files needed (URL records; `daad fetch` caches their images)")
    if entry.download is None:
        if entry.manual_download:
            how = f"--root {entry.id}=PATH or DAAD_ROOT_{entry.id.upper()}=PATH"
            manual = entry.manual_download.strip().rstrip(".")
            return Outcome(entry.id, SKIPPED, f"manual download: {manual}; then pass {how}")
        return Outcome(entry.id, SKIPPED, "no open download in the catalogue")
    if registry.committed_manifest(entry.id) is None and entry.download.sha256 is None and entry.download.md5 is None:
        return Outcome(entry.id, SKIPPED, f"no manifest in {registry.manifests_dir} and no sha256 pin for its "
                                          "archive in downloads.toml: nothing to check it against")
    where = entry.licence_url or entry.homepage
    if not options.policy.allows(entry.licence):
        return Outcome(entry.id, SKIPPED, f"licence {entry.licence} ({where}) is outside the policy {options.policy.name!r}")
    if needs_acceptance(entry):
        if entry.licence not in options.accepted:
            return Outcome(
                entry.id, SKIPPED,
                f"licence {entry.licence} not accepted; read it at {where}, then pass --accept-licence {entry.licence}",
            )
    state = _fetch_verified(registry, entry, options, shared)
    if "records" in state:
        pin = "sha256" if entry.download.sha256 is not None else "md5"
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(state["skipped"].items()))
        unmapped = f"{state['unmapped']} of them unmapped"
        if unlisted := state.get("unlisted"):
            named = ", ".join(f"{label} {n}" for label, n in unlisted.items())
            unmapped += f"; {sum(unlisted.values())} of a native label the catalogue does not list: {named}"
        return Outcome(entry.id, DOWNLOADED, f"archive {pin} verified; manifest of {state['records']} records "
                                             f"written ({unmapped})"
                                             + (f"; skipped: {skipped}" if skipped else ""), state["records"])
    return Outcome(entry.id, DOWNLOADED, f"{state['files_verified']} files verified", state["files_verified"])


def _urls(entry: SourceEntry, options: PrepareOptions) -> list[str]:
    """The URLs of an origin's archives (none where it has no download)."""
    return [archive_url(part.url, options.base_url) for part in entry.download.archives()] if entry.download else []


def _archive_paths(entry: SourceEntry, options: PrepareOptions) -> list[Path]:
    """Where an origin's archives are downloaded to, in the order of :func:`_urls`."""
    parts = entry.download.archives() if entry.download else []
    return [archive_path(options.data, url, part.format) for part, url in zip(parts, _urls(entry, options))]


def _fetch_verified(registry: Registry, entry: SourceEntry, options: PrepareOptions, shared: Collection[str]) -> dict:
    """Download, unpack into a temp folder, verify (or write the manifest), rename into place;
    returns what the state file records. Fetches once more if corrupt. A source published as
    several archives (``parts``) has each downloaded, checked and unpacked into the same folder."""
    spec = entry.download
    assert spec is not None
    state_dir = options.data / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    for stale in state_dir.glob(f"tmp-{entry.id}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    urls, paths = _urls(entry, options), _archive_paths(entry, options)
    wanted = wanted_files(registry, entry)
    for attempt in (1, 2):
        tmp = Path(tempfile.mkdtemp(prefix=f"tmp-{entry.id}-", dir=state_dir))
        staged = tmp / entry.id
        suspects, suspect_url = paths, urls[0]  # what to fetch again if the check fails: the archive at hand, or all
        try:
            archive_sha256 = []
            for k, (part, url, archive) in enumerate(zip(spec.archives(), urls, paths)):
                suspects, suspect_url = [archive], url
                # A complete archive left by an interrupted run is reused (re-checked when pinned); a .part resumes.
                if part.sha256 is not None or not archive.exists():
                    _download_archive(entry.id, url, archive, part.sha256, part.size, options)
                archive_sha256.append(part.sha256)
                if part.md5 is not None:
                    md5, read_sha256 = md5_and_sha256(archive)
                    if md5 != part.md5:
                        raise SourceDownloadError(entry.id, f"download of {url} failed: md5_mismatch: expected {part.md5}, got {md5}")
                    archive_sha256[-1] = part.sha256 or read_sha256
                target = staged if k == 0 else tmp / f"part-{k}"
                unpack(
                    archive, target, format=part.format, subpath=part.subpath,
                    max_bytes=min(part.max_unpacked_bytes, options.max_unpacked_bytes),
                    max_members=part.max_members, max_ratio=part.max_ratio, wanted=wanted,
                )
                if k:
                    _merge_part(entry.id, url, target, staged)
            suspects, suspect_url = paths, urls[0]
            if registry.committed_manifest(entry.id) is not None:
                state = {"files_verified": verify_files(registry, entry.id, staged, progress=options.progress)}
            else:
                report, manifest = write_downloaded_manifest(registry, entry, staged)
                sha256s = [known or sha256_file(archive) for known, archive in zip(archive_sha256, paths)]
                state = {"archive_sha256": sha256s[0], "manifest": str(manifest),
                         "manifest_sha256": sha256_file(manifest),
                         "records": report.accepted, "unmapped": sum(report.unmapped.values()),
                         "skipped": dict(report.skipped)}
                if unlisted := entry.unlisted(report.unmapped):
                    state["unlisted"] = unlisted
                if spec.parts:
                    state["parts_sha256"] = sha256s[1:]
            os.rename(staged, options.data / entry.id)
        except ArchiveLayoutError:
            _remove(paths)
            raise
        except (CorruptArchiveError, SourceDownloadError) as exc:
            _remove(suspects)
            if attempt == 2:
                _remove(paths)
                detail = exc.detail if isinstance(exc, SourceDownloadError) else str(exc)
                raise SourceDownloadError(entry.id, f"{detail} (still wrong after fetching {suspect_url} again)") from None
            continue
        except ArchiveError as exc:
            _remove(paths)
            raise SourceDownloadError(entry.id, str(exc)) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove([path for path, url in zip(paths, urls) if url not in shared])
        _write_state(options.data, entry.id, {"url": urls[0], "subpath": spec.subpath, **state})
        return state
    raise AssertionError("unreachable")


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _merge_part(origin: str, url: str, part: Path, staged: Path) -> None:
    """Move the unpacked tree of a further archive into the source's folder; a path that an
    earlier archive already holds (other than a shared folder) is refused."""
    for item in sorted(part.iterdir()):
        target = staged / item.name
        if not os.path.lexists(target):
            os.rename(item, target)
        elif item.is_dir() and not item.is_symlink() and target.is_dir() and not target.is_symlink():
            _merge_part(origin, url, item, target)
        else:
            raise ArchiveLayoutError(origin, f"{url} holds {item.name!r} where an earlier archive of the source "
                                             f"put a file: its archives overlap")


def wanted_files(registry: Registry, entry: SourceEntry) -> Callable[[PurePosixPath], bool] | None:
    """Which files of an origin's archive to unpack: the images its committed manifest names and
    what its catalogue entry's ``keep`` patterns match. Without a committed manifest (its manifest is
    then written from the archive by the loader): what ``keep`` matches (3D-ADAM leaves its xyz/ TIFFs
    packed), every file (``None``) when the entry has no ``keep``."""
    keep = entry.download.keep if entry.download is not None else ()

    def kept(relpath: PurePosixPath) -> bool:
        return any(fnmatchcase(relpath.as_posix(), k) for k in keep)

    if registry.committed_manifest(entry.id) is None:
        return kept if keep else None
    named = {r.image.path for r in registry.records([entry.id]) if r.image.path is not None}
    return lambda relpath: relpath.as_posix() in named or kept(relpath)


def archive_path(data: Path, url: str, format: str) -> Path:
    """Where the archive of ``url`` is downloaded to (named by its URL, so a new pin starts afresh and
    origins unpacking one archive share it)."""
    return data / STATE_DIR / "archives" / f"{sha256_bytes(url.encode())[:16]}.{format}"


def _download_archive(
    origin: str, url: str, archive: Path, sha256: str | None, size: int | None, options: PrepareOptions
) -> None:
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"download {origin}", disable=not options.progress) as bar:
        result = download(
            url, archive, sha256=sha256, max_bytes=options.max_archive_bytes, timeout=options.timeout,
            retries=options.retries, progress=bar.update,
        )
    if not result.ok:
        label = failure_reason(result)
        why = label if label == result.reason else f"{label} ({result.reason})"
        raise SourceDownloadError(origin, f"download of {url} failed: {why}: {result.detail}")


def write_downloaded_manifest(registry: Registry, entry: SourceEntry, root: Path) -> tuple[IngestReport, Path]:
    """Read the unpacked, sha256-verified archive at ``root`` with ``entry``'s loader and write
    ``<data dir>/manifests/<origin>.jsonl`` (atomically; curation of an earlier one is kept).

    Returns the ingest report and the manifest's path. Raises :class:`ArchiveLayoutError` when
    the loader fails (a missing index file, a duplicate id ...) or finds no record at all (the
    archive is not laid out as the catalogue says); nothing is written then.
    """
    path = registry.downloaded_manifests_dir / f"{entry.id}.jsonl"
    try:
        items = list(get_loader(entry.id).iter_records(root, entry))
        if not any(isinstance(item, Record) for item in items):
            raise ArchiveLayoutError(entry.id, f"its loader found no record in the archive ({len(items)} item(s) "
                                                f"skipped): it is not laid out as the catalogue's subpath "
                                                f"{entry.download.subpath if entry.download else ''!r} expects")
        report = ingest(items, path)
    except ArchiveLayoutError:
        raise
    except (DaadError, ValueError, OSError) as exc:
        raise ArchiveLayoutError(entry.id, f"cannot write its manifest from the archive: {exc}") from None
    return report, path


def verify_files(registry: Registry, origin: str, root: Path, *, progress: bool = False) -> int:
    """Check every image the origin's manifest names, under ``root``, against its sha256.

    Masks live in the manifests as RLE, so there are no mask files to check. Raises
    :class:`SourceDownloadError` naming the first mismatches; returns the count checked.
    """
    records = [r for r in registry.records([origin]) if r.image.path is not None]
    errors: list[str] = []
    for record in tqdm(records, desc=f"verify {origin}", unit="file", disable=not progress):
        try:
            read_verified(resolve_in_root(root, record.image.path, record.id), record.image.sha256, record.id)
        except (RecordFileError, PathEscapeError) as exc:
            errors.append(str(exc).replace(str(root), f"<{origin}>"))
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise SourceDownloadError(origin, f"{len(errors)} file(s) differ from the manifest: " + "; ".join(errors[:3]) + more)
    return len(records)


def md5_and_sha256(path: Path) -> tuple[str, str]:
    """The md5 (archives pinned by the md5 their publisher or anomalib gives) and the sha256
    (recorded in the state file) of a file, in one read."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def _state_path(data: Path, origin: str) -> Path:
    return data / STATE_DIR / f"{origin}.json"


def _write_state(data: Path, origin: str, values: dict) -> None:
    state = {"origin": origin, **values, "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomically(_state_path(data, origin), [json.dumps(state, indent=2, sort_keys=True) + "\n"])

