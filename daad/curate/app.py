"""Serve the FiftyOne App for a curation session on 127.0.0.1.

The App server is FiftyOne's own (``fiftyone/server/main.py``, hypercorn) run as a
child process of the session, so it is stopped by PID with the database; it reads
the session's database through ``FIFTYONE_DATABASE_URI``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from daad.curate.session import CurationEnvError, CurationSession, free_port, port_in_use, wait_for_port

DEFAULT_PORT = 5151


@dataclass
class AppServer:
    """A running App server: its process, port and the URL of the dataset."""

    process: psutil.Process
    port: int
    dataset: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/datasets/{quote(self.dataset)}"


def launch_app(session: CurationSession, dataset: str, port: int | None = DEFAULT_PORT, *, log: Path | None = None) -> AppServer:
    """Start the App server on ``127.0.0.1:port`` (a free port when ``None``) showing ``dataset``."""
    fo = session.fiftyone()
    port = port or free_port()
    if port_in_use(port):
        raise CurationEnvError(f"port {port} on 127.0.0.1 is in use (another App?); pass --port with a free one")
    server_dir = Path(fo.__file__).parent / "server"
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 - owned by the child
    try:
        proc = session.spawn(
            [sys.executable, str(server_dir / "main.py"), "--port", str(port), "--address", "127.0.0.1"],
            "fiftyone app",
            cwd=str(server_dir),
            **({"stdout": out, "stderr": out} if out else {}),
        )
    finally:
        if out is not None:
            out.close()
    wait_for_port(port, proc, "FiftyOne App server")
    return AppServer(proc, port, dataset)
