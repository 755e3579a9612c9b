"""Writing a dataset folder in the Hugging Face Hub's script-free layout, atomically.

``DatasetFolderWriter`` streams rows into parquet shards inside a temporary sibling of
the output folder; ``commit`` writes the card and swaps the new folder in with one
atomic ``renameat2(RENAME_EXCHANGE)``, so a build that fails or is killed (``kill -9``
included) leaves the previous output as it was. Rows are buffered per shard up to a
fixed row count and a global byte budget, so memory stays bounded however many rows
are written; the buffering depends only on the rows, so the same rows give the same
bytes. Row groups are compressed, written and synced to disk by one background thread, in
the order they were made (pyarrow and the disk let go of the GIL meanwhile, so the caller
goes on making rows); at most ``IN_FLIGHT`` of them wait for it. Each shard's sha256 is
taken from its bytes as they are written, so it is never read back.

One writer at a time per output: the writer holds an exclusive ``flock`` on
``.<out>.lock`` beside the output from start to commit or abort; a second writer to the
same output is refused with :class:`OutputLockedError`, which names the holder.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import json
import os
import socket
import sys
import time
import shutil
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from daad.atomic import process_alive
from daad.errors import DaadError

ROWS_PER_GROUP = 128
BUFFER_BYTES = 64 << 20
IN_FLIGHT = 2
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class OutputLockedError(DaadError):
    """Another writer (``daad build``, a generator) is writing the same output folder."""

    def __init__(self, out: Path, holder: dict) -> None:
        self.out, self.holder = out, holder
        who = ", ".join(f"{k} {holder[k]}" for k in ("pid", "host", "since", "command") if k in holder) or "unknown"
        super().__init__(f"{out} is being written by another process ({who}); wait for it to finish, or choose another --out")


def card_text(front_matter: dict[str, Any], body: str) -> str:
    """A dataset card: YAML front matter (``configs``, ``dataset_info`` ...) and Markdown."""
    header = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n{body.rstrip()}\n"


def features_yaml(features: datasets.Features) -> list[dict[str, Any]]:
    """``features`` as the list the card's ``dataset_info.features`` holds."""
    return features._to_yaml_list()


class DatasetFolderWriter:
    """Streams rows into ``<out>/<shard>.parquet`` files; nothing is visible until ``commit``."""

    def __init__(
        self,
        out: Path,
        features: datasets.Features,
        *,
        rows_per_group: int = ROWS_PER_GROUP,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self.out = Path(out).absolute()
        self.features = features
        self.schema: pa.Schema = features.arrow_schema
        self.rows_per_group = rows_per_group
        self.buffer_bytes = buffer_bytes
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_output(self.out)
        _recover(self.out)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._buffer_sizes: dict[str, int] = {}
        self._writers: dict[str, tuple[pq.ParquetWriter, _HashingFile]] = {}
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        self._in_flight: deque[Future] = deque()
        self.rows_written: dict[str, int] = {}
        self.sha256: dict[str, str] = {}
        """The sha256 of every shard written (computed as it was written, not read back)."""

    def __enter__(self) -> DatasetFolderWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        self._unlock()

    def write(self, shard: str, row: dict[str, Any], nbytes: int = 0) -> None:
        """Add ``row`` to shard ``shard`` (a relative path such as ``data/x/crack.parquet``)."""
        buffer = self._buffers.setdefault(shard, [])
        buffer.append(row)
        self._buffer_sizes[shard] = self._buffer_sizes.get(shard, 0) + nbytes
        self.rows_written[shard] = self.rows_written.get(shard, 0) + 1
        if len(buffer) >= self.rows_per_group:
            self._flush(shard)
        elif sum(self._buffer_sizes.values()) > self.buffer_bytes:
            self._flush(max(self._buffer_sizes, key=lambda s: (self._buffer_sizes[s], s)))

    def close_shard(self, shard: str) -> None:
        """Flush and close one shard (e.g. when its origin is done), freeing its buffer; its
        file is completed in the background (see :meth:`finish`)."""
        self._flush(shard)
        writer = self._writers.pop(shard, None)
        if writer is not None:
            self._submit(self._close, shard, *writer)

    def finish(self) -> None:
        """Close every shard and wait until all are written; :attr:`sha256` then names them all."""
        for shard in sorted(set(self._buffers) | set(self._writers)):
            self.close_shard(shard)
        self._drain()

    def adopt(self, relpath: str, source: Path, rows: int, sha256: str) -> None:
        """Take a finished shard of ``rows`` rows and the given sha256 from an earlier build
        (hard link; copy across devices)."""
        path = self.tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, path)
        except OSError:
            shutil.copyfile(source, path)
        self.rows_written[relpath] = rows
        self.sha256[relpath] = sha256

    def write_file(self, relpath: str, data: bytes | str) -> None:
        """Write an extra file (card, checksums) into the new folder."""
        path = self.tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode("utf-8")
        path.write_bytes(data)

    def commit(self) -> Path:
        """Close every shard and swap the new folder in place of ``out``."""
        self.finish()
        self._io.shutdown()
        _fsync_tree(self.tmp)
        if self.out.exists():
            _exchange(self.tmp, self.out)  # tmp now holds the previous output
            shutil.rmtree(self.tmp)
        else:
            os.rename(self.tmp, self.out)
        self._unlock()
        return self.out

    def abort(self) -> None:
        """Drop everything written so far; the previous output stays untouched."""
        self._io.shutdown(cancel_futures=True)
        for writer, sink in self._writers.values():
            writer.close()
            sink.close()
        self._writers.clear()
        self._buffers.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            _unlock_output(self.out, self._lock)
            self._lock = None

    def _flush(self, shard: str) -> None:
        rows = self._buffers.get(shard)
        if not rows:
            return
        table = pa.Table.from_pylist(rows, schema=self.schema)
        if shard not in self._writers:
            path = self.tmp / shard
            path.parent.mkdir(parents=True, exist_ok=True)
            sink = _HashingFile(path)
            writer = pq.ParquetWriter(sink, self.schema, compression="zstd", use_dictionary=False, write_statistics=False)
            self._writers[shard] = (writer, sink)
        self._submit(_write_group, *self._writers[shard], table)
        self._buffers[shard] = []
        self._buffer_sizes[shard] = 0

    def _submit(self, call, *args, **kwargs) -> None:
        """Run ``call`` on the writing thread after what is already queued; wait while
        ``IN_FLIGHT`` calls are queued (re-raising what they raised)."""
        while len(self._in_flight) >= IN_FLIGHT:
            self._in_flight.popleft().result()
        self._in_flight.append(self._io.submit(call, *args, **kwargs))

    def _drain(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().result()

    def _close(self, shard: str, writer: pq.ParquetWriter, sink: _HashingFile) -> None:
        """Write a shard's footer, close its file and keep its sha256 (on the writing thread)."""
        writer.close()
        sink.close()
        self.sha256[shard] = sink.digest.hexdigest()


class _HashingFile(io.RawIOBase):
    """A file being written that keeps the sha256 of the bytes written to it."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "xb", buffering=0)
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        written = self._file.write(data)
        self.digest.update(memoryview(data)[:written])  # a short write is retried with the rest
        return written

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()
        super().close()


def _write_group(writer: pq.ParquetWriter, sink: _HashingFile, table: pa.Table) -> None:
    """Write ``table`` as one row group and flush it to disk (on the writing thread, so that
    the caller does not wait for the disk, and ``commit`` has little left to sync)."""
    writer.write_table(table, row_group_size=len(table))
    os.fdatasync(sink.fileno())


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths (Linux ``renameat2``); a two-step rename where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(b))
    old = b.parent / f".{b.name}.old-{os.getpid()}"
    os.rename(b, old)
    os.rename(a, b)
    os.rename(old, a)


def _recover(out: Path) -> None:
    """Undo what an interrupted two-step swap left, and remove temp folders of dead writers."""
    for stale in out.parent.glob(f".{out.name}.*-*"):
        kind, _, rest = stale.name[len(out.name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if kind == "old" and not out.exists():
            os.rename(stale, out)
        elif kind in ("tmp", "old") and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _lock_output(out: Path) -> int:
    """An exclusive lock on ``out`` (held by the returned fd until :func:`_unlock_output`),
    recording who holds it; :class:`OutputLockedError` naming the holder when another process has it."""
    path = _lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            raise OutputLockedError(out, holder) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed it as we opened it: lock the new one
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv)[:300],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd


def _unlock_output(out: Path, fd: int) -> None:
    """Remove the lock file, then release it (a writer that opened it meanwhile sees it gone and retries)."""
    Path(_lock_path(out)).unlink(missing_ok=True)
    os.close(fd)


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
