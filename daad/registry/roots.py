"""Where each origin's files live, and safe resolution of record paths inside them.

Scheme (one, documented in the README): a root for origin ``o`` is, in order,
1. given explicitly (``--root o=PATH`` on the CLI, or ``Roots({"o": PATH})`` in Python);
2. the environment variable ``DAAD_ROOT_<O>`` (origin upper-cased, e.g. ``DAAD_ROOT_CRACKFOREST``);
3. ``<data dir>/<o>`` when that folder exists; the data dir is ``$DAAD_DATA_DIR`` or
   ``~/.cache/daad/data`` (where ``daad download`` unpacks sources, and writes
   ``<data dir>/manifests/<o>.jsonl`` for sources pinned by their archive's sha256).
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path, PurePosixPath

from daad.errors import PathEscapeError, RecordFileError, RootNotFoundError
from daad.images import read_regular


def data_dir() -> Path:
    """The directory where downloaded sources are unpacked."""
    env = os.environ.get("DAAD_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "daad" / "data"


def cache_dir() -> Path:
    """The directory for fetched URL images and other caches."""
    env = os.environ.get("DAAD_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "daad"


def parse_root_options(values: list[str] | None) -> dict[str, Path]:
    """Parse repeated ``origin=PATH`` CLI values."""
    roots: dict[str, Path] = {}
    for value in values or ():
        origin, sep, path = value.partition("=")
        if not sep or not origin or not path:
            raise ValueError(f"--root expects ORIGIN=PATH, got {value!r}")
        roots[origin.strip()] = Path(path).expanduser()
    return roots


class Roots:
    """Maps origins to root directories (explicit, then environment, then data dir)."""

    def __init__(self, explicit: Mapping[str, Path | str] | None = None, *, data: Path | None = None) -> None:
        self._explicit = {k: Path(v).expanduser() for k, v in (explicit or {}).items()}
        self._data = data

    @property
    def data(self) -> Path:
        """The data dir these roots fall back to (where ``daad download`` unpacks sources)."""
        return self._data or data_dir()

    def get(self, origin: str) -> Path | None:
        if origin in self._explicit:
            return self._explicit[origin]
        env = os.environ.get(f"DAAD_ROOT_{origin.upper()}")
        if env:
            return Path(env).expanduser()
        candidate = self.data / origin
        return candidate if candidate.is_dir() else None

    def __getitem__(self, origin: str) -> Path:
        root = self.get(origin)
        if root is None:
            raise RootNotFoundError(
                f"no root for origin {origin!r}: pass --root {origin}=PATH, set "
                f"DAAD_ROOT_{origin.upper()}, or run `daad download` to fetch it into {self.data}"
            )
        return root


def resolve_in_root(root: Path, relpath: str, record_id: str) -> Path:
    """``root / relpath``, refusing absolute paths, ``..`` and symlinks that leave ``root``."""
    pure = _checked_relpath(root, relpath, record_id)
    base = root.resolve()
    path = (base / pure).resolve()
    if not path.is_relative_to(base):
        raise PathEscapeError(record_id, relpath, root)
    return path


def read_in_root(root: Path, relpath: str, record_id: str) -> bytes:
    """The bytes of ``root / relpath`` under the rules of :func:`resolve_in_root`.

    On Linux the file is opened with ``openat2(RESOLVE_BENEATH)``, which opens it only if no
    step of the path leaves ``root``: one system call, no per-component ``lstat``, and no
    window between checking the path and reading it. What the kernel refuses (an absolute
    symlink is refused even when it points inside ``root``), and every path where there is
    no ``openat2``, is decided by resolving the path. Only a regular file is read (opened
    without blocking, so a FIFO is refused, not waited on). Raises ``RecordFileError``
    (missing, not a file, unreadable) or ``PathEscapeError``.
    """
    pure = _checked_relpath(root, relpath, record_id)
    try:
        fd = _open_beneath(root, str(pure))
        if fd is None:
            fd = os.open(resolve_in_root(root, relpath, record_id), _READ_FLAGS)
        return read_regular(fd, record_id, root / pure)
    except FileNotFoundError:
        raise RecordFileError(record_id, root / pure, "missing", "file does not exist") from None
    except (IsADirectoryError, NotADirectoryError):
        raise RecordFileError(record_id, root / pure, "missing", "not a file") from None
    except OSError as exc:
        raise RecordFileError(record_id, root / pure, "unreadable", exc.strerror or str(exc)) from None


def _checked_relpath(root: Path, relpath: str, record_id: str) -> PurePosixPath:
    """``relpath`` as a relative path without ``..``; raises ``PathEscapeError`` otherwise."""
    pure = PurePosixPath(relpath)
    drive_like = bool(pure.parts) and ":" in pure.parts[0]  # C:\... written on Windows
    if not pure.parts or pure.is_absolute() or relpath.startswith("\\") or drive_like or ".." in pure.parts:
        raise PathEscapeError(record_id, relpath, root)
    return pure


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = ctypes.c_long(437)  # the same number on every Linux architecture
_RESOLVE_BENEATH = 0x08
_RESOLVE_NO_MAGICLINKS = 0x02
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_READ_BENEATH = _OpenHow(_READ_FLAGS, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)


def _open_beneath(root: Path, relpath: str) -> int | None:
    """A read-only fd of ``relpath`` opened beneath ``root`` by ``openat2``; ``None`` where
    there is no ``openat2`` or where it refused a step (``EXDEV``, ``ELOOP``) that resolving may allow."""
    syscall = _openat2()
    if syscall is None:
        return None
    dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _call_openat2(syscall, dirfd, os.fsencode(relpath), _READ_BENEATH)
    finally:
        os.close(dirfd)
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err in (errno.EXDEV, errno.ELOOP):
        return None
    raise OSError(err, os.strerror(err), relpath)


def _call_openat2(syscall, dirfd: int, path: bytes, how: _OpenHow) -> int:
    return syscall(_SYS_OPENAT2, ctypes.c_long(dirfd), path, ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))


@cache
def _openat2():
    """libc's ``syscall`` where ``openat2`` works (Linux >= 5.6, not filtered by a sandbox), else ``None``."""
    if sys.platform != "linux":
        return None
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    how = _OpenHow(os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, _RESOLVE_BENEATH)
    fd = _call_openat2(syscall, -100, b".", how)  # AT_FDCWD
    if fd < 0:
        return None
    os.close(fd)
    return syscall


def fetched_image_path(sha256: str) -> Path:
    """Where ``daad fetch`` keeps the image of a URL record, addressed by its content hash."""
    return cache_dir() / "fetched" / sha256[:2] / sha256
