"""Where each origin's files live, and safe resolution of record paths inside them.

Scheme (one, documented in the README): a root for origin ``o`` is, in order,
1. given explicitly (``--root o=PATH`` on the CLI, or ``Roots({"o": PATH})`` in Python);
2. the environment variable ``DAAD_ROOT_<O>`` (origin upper-cased, e.g. ``DAAD_ROOT_CRACKFOREST``);
3. ``<data dir>/<o>`` when that folder exists; the data dir is ``$DAAD_DATA_DIR`` or
   ``~/.cache/daad/data`` (where ``daad download`` unpacks sources).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from daad.errors import PathEscapeError, RootNotFoundError


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

    def get(self, origin: str) -> Path | None:
        if origin in self._explicit:
            return self._explicit[origin]
        env = os.environ.get(f"DAAD_ROOT_{origin.upper()}")
        if env:
            return Path(env).expanduser()
        candidate = (self._data or data_dir()) / origin
        return candidate if candidate.is_dir() else None

    def __getitem__(self, origin: str) -> Path:
        root = self.get(origin)
        if root is None:
            raise RootNotFoundError(
                f"no root for origin {origin!r}: pass --root {origin}=PATH, set "
                f"DAAD_ROOT_{origin.upper()}, or run `daad download` to fetch it into {self._data or data_dir()}"
            )
        return root


def resolve_in_root(root: Path, relpath: str, record_id: str) -> Path:
    """``root / relpath``, refusing absolute paths, ``..`` and symlinks that leave ``root``."""
    pure = PurePosixPath(relpath)
    drive_like = bool(pure.parts) and ":" in pure.parts[0]  # C:\... written on Windows
    if not pure.parts or pure.is_absolute() or relpath.startswith("\\") or drive_like or ".." in pure.parts:
        raise PathEscapeError(record_id, relpath, root)
    base = root.resolve()
    path = (base / pure).resolve()
    if not path.is_relative_to(base):
        raise PathEscapeError(record_id, relpath, root)
    return path


def fetched_image_path(sha256: str) -> Path:
    """Where ``daad fetch`` keeps the image of a URL record, addressed by its content hash."""
    return cache_dir() / "fetched" / sha256[:2] / sha256
