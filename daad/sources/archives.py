"""Safe unpacking of downloaded zip and tar archives.

Only the members under ``subpath`` that the caller wants (``wanted``: the files the
manifests name and the loader reads) are extracted; the rest is never written. A member
whose path is absolute or climbs out with ``..``, a symbolic or hard link pointing outside
the target, a device or fifo, more members than ``max_members``, or a total size above
``max_bytes`` or above ``max_ratio`` times the archive's own size (a zip bomb) raises
:class:`UnsafeArchiveError` before or while writing (sizes are checked as announced, then
as actually written), and the caller discards the partly written temp folder. An archive
that cannot be read (truncated, bad CRC) raises :class:`CorruptArchiveError`.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from daad.errors import DaadError

FORMATS = ("zip", "tar")
CHUNK = 1 << 20
MAX_MEMBERS = 50_000
"""Default cap on the entries of one archive."""
MAX_RATIO = 50.0
"""Default cap on the bytes unpacked per byte of archive."""


class ArchiveError(DaadError):
    """An archive could not be unpacked."""

    def __init__(self, archive: Path, detail: str) -> None:
        self.archive, self.detail = archive, detail
        super().__init__(f"{archive}: {detail}")


class UnsafeArchiveError(ArchiveError):
    """A member would land outside the target, is a link out, or the archive is too large."""


class CorruptArchiveError(ArchiveError):
    """The archive is truncated or damaged (worth fetching again)."""


@dataclass(frozen=True, slots=True)
class Member:
    """One archive entry, normalised: its path relative to ``subpath`` and its kind."""

    name: str
    relpath: PurePosixPath
    kind: str
    """``file``, ``dir``, ``symlink`` or ``hardlink``."""
    size: int
    link: str = ""


@dataclass(frozen=True, slots=True)
class _Rules:
    """What one unpacking may write."""

    prefix: PurePosixPath | None
    max_bytes: int
    max_members: int
    wanted: Callable[[PurePosixPath], bool] | None


def unpack(
    archive: Path,
    target: Path,
    *,
    format: str,
    subpath: str = "",
    max_bytes: int,
    max_members: int = MAX_MEMBERS,
    max_ratio: float = MAX_RATIO,
    wanted: Callable[[PurePosixPath], bool] | None = None,
) -> int:
    """Extract the members of ``archive`` under ``subpath`` (those ``wanted(relpath)`` accepts,
    every one by default) into the new folder ``target``.

    Returns the number of files written. ``target`` must not exist yet; on error it may
    hold a partial tree, which the caller removes.
    """
    if format not in FORMATS and not format.startswith("tar"):
        raise ArchiveError(archive, f"unknown archive format {format!r} (expected zip or tar)")
    target.mkdir(parents=True)
    prefix = PurePosixPath(subpath.strip("/")) if subpath.strip("/") else None
    by_ratio = int(max_ratio * archive.stat().st_size)
    cap = min(max_bytes, by_ratio)
    why = f"the cap of {max_bytes}" if cap == max_bytes else f"{max_ratio:g} times the archive's {archive.stat().st_size} bytes"
    rules = _Rules(prefix, cap, max_members, wanted)
    try:
        if format == "zip":
            return _unpack_zip(archive, target, rules, why)
        return _unpack_tar(archive, target, rules, why)
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, lzma.LZMAError, zlib.error, EOFError) as exc:
        raise CorruptArchiveError(archive, f"cannot read archive: {exc}") from None


def _unpack_zip(archive: Path, target: Path, rules: _Rules, why: str) -> int:
    prefix = rules.prefix
    with zipfile.ZipFile(archive) as zf:
        _check_count(archive, len(zf.infolist()), rules.max_members)
        members = []
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                kind, link = "symlink", zf.read(info).decode("utf-8", "replace")
            else:
                kind, link = ("dir" if info.is_dir() else "file"), ""
            members.append((info, _member(archive, info.filename, kind, info.file_size, link, prefix)))
        return _write_members(archive, target, rules, why, members, zf.open)


def _unpack_tar(archive: Path, target: Path, rules: _Rules, why: str) -> int:
    prefix = rules.prefix
    with tarfile.open(archive) as tf:
        infos = []
        for info in tf:  # headers one at a time, so that a flood of members stops at the cap
            infos.append(info)
            _check_count(archive, len(infos), rules.max_members)
        members = []
        for info in infos:
            if info.isfile():
                kind = "file"
            elif info.isdir():
                kind = "dir"
            elif info.issym():
                kind = "symlink"
            elif info.islnk():
                kind = "hardlink"
            else:
                raise UnsafeArchiveError(archive, f"member {info.name!r} is a device or fifo")
            members.append((info, _member(archive, info.name, kind, info.size, info.linkname, prefix)))
        return _write_members(archive, target, rules, why, members, tf.extractfile)


def _check_count(archive: Path, count: int, max_members: int) -> None:
    if count > max_members:
        raise UnsafeArchiveError(archive, f"more than {max_members} members (the catalogue's max_members)")


def _write_members(archive: Path, target: Path, rules: _Rules, why: str, members: list, open_file) -> int:
    """Check the wanted ``members`` (``(info, member or None)``) as a whole, then write them
    under ``target``; ``open_file(info)`` opens a file member's data. Returns the files written."""
    for _, m in members:  # an unsafe member is refused even where it is not wanted
        if m is not None and m.kind == "hardlink" and _member(archive, m.link, "file", 0, "", rules.prefix) is None:
            raise UnsafeArchiveError(archive, f"hard link {m.name!r} points outside {rules.prefix}")
    members = [
        (info, m) for info, m in members
        if m is not None and (rules.wanted is None or (m.kind != "dir" and rules.wanted(m.relpath)))
    ]
    _check(archive, [m for _, m in members], rules.max_bytes, why)
    prefix = rules.prefix
    written = 0
    budget = rules.max_bytes
    for info, member in members:
        if member.kind == "file":
            with open_file(info) as src:
                budget -= _copy(archive, src, _destination(archive, target, member), budget, why)
            written += 1
        elif member.kind == "hardlink":
            linked = _member(archive, member.link, "file", 0, "", prefix)
            if linked is None:
                raise UnsafeArchiveError(archive, f"hard link {member.name!r} points outside {prefix}")
            source = target / linked.relpath
            if not source.resolve().is_relative_to(target.resolve()):
                raise UnsafeArchiveError(archive, f"hard link {member.name!r} leads outside the target")
            budget -= source.stat().st_size
            if budget < 0:
                raise UnsafeArchiveError(archive, f"hard link {member.name!r}: unpacked data exceeds {why}")
            shutil.copyfile(source, _destination(archive, target, member))
            written += 1
        else:
            _make_non_file(archive, target, member)
    return written


def _member(
    archive: Path, name: str, kind: str, size: int, link: str, prefix: PurePosixPath | None
) -> Member | None:
    """The normalised member, ``None`` when it lies outside ``prefix``; unsafe names raise."""
    if "\\" in name or name.startswith("/") or (name[:2].endswith(":")):
        raise UnsafeArchiveError(archive, f"member {name!r} has an absolute or Windows path")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise UnsafeArchiveError(archive, f"member {name!r} climbs out of the target with '..'")
    path = PurePosixPath(*parts) if parts else PurePosixPath()
    if prefix is not None:
        if not path.is_relative_to(prefix) or path == prefix:
            return None
        path = path.relative_to(prefix)
    if not path.parts:
        return None
    if kind == "symlink" and not _link_stays_inside(path, link):
        raise UnsafeArchiveError(archive, f"symbolic link {name!r} -> {link!r} points outside the target")
    return Member(name, path, kind, size, link)


def _link_stays_inside(path: PurePosixPath, link: str) -> bool:
    if not link or link.startswith("/") or "\\" in link:
        return False
    depth = len(path.parts) - 1
    for part in PurePosixPath(link).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def _check(archive: Path, members: list[Member], max_bytes: int, why: str) -> None:
    total = sum(m.size for m in members if m.kind == "file")
    if total > max_bytes:
        raise UnsafeArchiveError(archive, f"unpacks to {total} bytes, above {why}")
    if not any(m.kind == "file" for m in members):
        raise ArchiveError(archive, "no files under the catalogue's subpath")


def _copy(archive: Path, src, dest: Path, budget: int, why: str) -> int:
    """Stream one member to ``dest``; counts real bytes so a lying header cannot exceed the cap."""
    written = 0
    with open(dest, "xb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            written += len(block)
            if written > budget:
                raise UnsafeArchiveError(archive, f"{dest.name}: unpacked data exceeds {why}")
            out.write(block)
    return written


def _make_non_file(archive: Path, target: Path, member: Member) -> None:
    dest = _destination(archive, target, member)
    if member.kind == "dir":
        dest.mkdir(exist_ok=True)
        return
    os.symlink(member.link, dest)
    if not Path(os.path.realpath(dest)).is_relative_to(target.resolve()):
        raise UnsafeArchiveError(archive, f"symbolic link {member.name!r} -> {member.link!r} points outside the target")


def _destination(archive: Path, target: Path, member: Member) -> Path:
    """``target / member.relpath`` after checking that no link already unpacked leads it out."""
    dest = target / member.relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(target.resolve()):
        raise UnsafeArchiveError(archive, f"member {member.name!r} would be written outside the target through a link")
    if dest.is_symlink() or (dest.exists() and member.kind != "dir"):
        raise UnsafeArchiveError(archive, f"member {member.name!r} appears twice or overwrites a link")
    return dest
