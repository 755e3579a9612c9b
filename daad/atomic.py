"""Crash-safe file replacement: a reader sees the old bytes or the new ones, never a mix.

The new bytes go to a hidden temp file beside the target (``.<name>.<pid>.tmp``), are
fsynced, renamed over the target with ``os.replace`` and the folder is fsynced. A writer
killed half way leaves only its temp file, which no reader looks at (hidden, another
suffix) and which the next write of the same file removes once its process is gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_path(path: Path, pid: int | None = None) -> Path:
    """The temp file process ``pid`` (default: this one) writes ``path`` through."""
    return path.with_name(f".{path.name}.{pid or os.getpid()}{TEMP_SUFFIX}")


def write_atomically(path: Path, chunks: Iterable[str | bytes], *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with the concatenated ``chunks`` (``str`` encoded with ``encoding``), atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk.encode(encoding) if isinstance(chunk, str) else chunk)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def link_or_copy(source: Path, dest: Path) -> None:
    """Make ``dest`` a hard link to ``source`` (across file systems, an atomic copy); an existing ``dest`` is kept."""
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except FileExistsError:
        return
    except OSError:
        with open(source, "rb") as f:
            write_atomically(dest, iter(lambda: f.read(1 << 20), b""))


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Remove the temp files of ``path`` left by writers that were killed (their process is gone)."""
    for tmp in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2: -len(TEMP_SUFFIX)]
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
