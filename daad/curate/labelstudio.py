"""A Label Studio server for mask annotation: started by daad on 127.0.0.1, or an existing one.

Label Studio cannot share daad's environment (its pins conflict with numpy, pyarrow,
boto3, ... of daad's lock), so its server runs from its own virtual environment:
``--label-studio-bin`` / ``$DAAD_LABEL_STUDIO``, else ``.venv-label-studio/bin/label-studio``
beside the checkout (``scripts/setup.sh`` makes it from ``requirements/label-studio.txt``),
else ``label-studio`` on ``PATH``. daad talks to it over HTTP only (``label-studio-sdk``,
in daad's environment). FiftyOne 1.22's backend uses the SDK's legacy ``Client`` (still in
SDK 2.x), which sends ``Authorization: Token <key>``: Label Studio 1.23 accepts that only
where legacy tokens are enabled, so daad starts its server with ``--enable-legacy-api-token``
and an existing server needs an account's legacy token.

A daad-started server keeps everything in one data folder (``$DAAD_LABEL_STUDIO_DIR``, else
``<daad cache>/label-studio``): its embedded SQLite database, the images it serves
(``daad-images/``, its local-files document root), its log, and ``daad-label-studio.json``
(mode 0600) holding the generated user, password and API token, and the running server's
PID and port. A second daad process (``daad curate annotate --load`` while annotators
work) joins the running server instead of starting another; a server whose starting
process was killed is adopted and stopped by the next session. The server is a child of
the :class:`~daad.curate.session.CurationSession` and stopped by PID with its children
when the session closes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from daad.atomic import write_atomically
from daad.curate.session import CurationEnvError, CurationSession, alive, free_port, port_in_use, wait_for_port
from daad.registry.roots import cache_dir

STATE_FILE = "daad-label-studio.json"
START_TIMEOUT_S = 240.0
"""A first start runs Label Studio's database migrations (about 30 s on a quiet machine)."""
USERNAME = "daad@localhost"
IMAGES_DIR = "daad-images"
"""The folder (in the data folder) whose images the server serves: its local-files document root."""
REPO = Path(__file__).resolve().parents[2]
QUIET_ENV = {  # no telemetry, no version check: the server may have no network at all
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "FEATURE_FLAGS_OFFLINE": "true",
}


@dataclass(frozen=True)
class LabelStudio:
    """How to reach a Label Studio server: its URL and an API token (and, for a daad-started
    server, the login for annotators and the folder whose files it serves)."""

    url: str
    token: str
    username: str | None = None
    password: str | None = None
    media_root: Path | None = None
    """Images placed here are served by the server itself (local files); ``None``: upload them."""
    process: psutil.Process | None = None
    """The server process when this session started or adopted it (stopped with the session)."""


def default_data_dir() -> Path:
    env = os.environ.get("DAAD_LABEL_STUDIO_DIR")
    return Path(env).expanduser() if env else cache_dir() / "label-studio"


def find_executable(given: Path | str | None = None) -> Path:
    """The ``label-studio`` executable: ``given``, ``$DAAD_LABEL_STUDIO``, the checkout's
    ``.venv-label-studio``, then ``PATH``; :class:`CurationEnvError` naming them when none is."""
    candidates = [given, os.environ.get("DAAD_LABEL_STUDIO"), REPO / ".venv-label-studio" / "bin" / "label-studio",
                  shutil.which("label-studio")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    raise CurationEnvError(
        "no Label Studio server executable: pass --label-studio-bin, set DAAD_LABEL_STUDIO, or create "
        f"{REPO / '.venv-label-studio'} (python3.11 -m venv .venv-label-studio && "
        ".venv-label-studio/bin/pip install -r requirements/label-studio.txt); or give a running server "
        "with --label-studio-url and --label-studio-token"
    )


def existing(url: str, token: str) -> LabelStudio:
    """A server somebody else runs (images are uploaded to it); checked to answer with this token."""
    server = LabelStudio(url.rstrip("/"), token)
    check(server)
    return server


def check(server: LabelStudio, timeout: float = 30.0) -> str:
    """The server's release; :class:`CurationEnvError` when it does not answer or refuses the token."""
    try:
        response = requests.get(f"{server.url}/api/projects", headers={"Authorization": f"Token {server.token}"},
                                params={"page_size": 1}, timeout=timeout)
        version = requests.get(f"{server.url}/api/version", timeout=timeout).json().get("release")
    except (requests.RequestException, ValueError) as exc:
        raise CurationEnvError(f"Label Studio at {server.url} does not answer: {exc}") from None
    if response.status_code in (401, 403):
        raise CurationEnvError(f"Label Studio at {server.url} refuses the API token (HTTP {response.status_code}); "
                               "pass your account's legacy token (Account & Settings > Legacy Token; an admin enables legacy "
                               "tokens under Organization > API Tokens): FiftyOne's Label Studio client sends "
                               "'Authorization: Token ...', which a personal access token does not pass")
    response.raise_for_status()
    return str(version)


def start(
    session: CurationSession,
    data_dir: Path | None = None,
    *,
    executable: Path | str | None = None,
    port: int | None = None,
    timeout: float = START_TIMEOUT_S,
) -> LabelStudio:
    """Start Label Studio on 127.0.0.1 with its data in ``data_dir`` (or join the one already
    serving it), owned by ``session``; returns how to reach it."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    (data_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    state = _read_state(data_dir)
    if "token" not in state:
        state.update(username=USERNAME, password=secrets.token_urlsafe(12), token=secrets.token_hex(20))
        _write_state(data_dir, state)
    running = _running(state, data_dir)
    if running is None:
        exe = find_executable(executable)
        port = port or free_port()
        if port_in_use(port):
            raise CurationEnvError(f"port {port} on 127.0.0.1 is in use; pass --port with a free one")
        env = {**QUIET_ENV, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
               "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(data_dir / IMAGES_DIR),
               # the login and token go by environment, not on a command line any local user can read
               "LABEL_STUDIO_USERNAME": state["username"], "LABEL_STUDIO_PASSWORD": state["password"],
               "LABEL_STUDIO_USER_TOKEN": state["token"]}
        with open(data_dir / "label-studio.log", "ab") as log:
            proc = session.spawn(
                [str(exe), "start", "--no-browser", "--data-dir", str(data_dir), "--internal-host", "127.0.0.1",
                 "--port", str(port), "--enable-legacy-api-token", "--log-level", "WARNING"],
                "label studio", env=env, stdout=log, stderr=log, cwd=str(data_dir),
            )
        _write_state(data_dir, {**state, "pid": proc.pid, "port": port, "owner": os.getpid()})
        started = time.monotonic()
        server = LabelStudio(f"http://127.0.0.1:{port}", state["token"], state["username"], state["password"],
                             data_dir / IMAGES_DIR, proc)
        try:
            wait_for_port(port, proc, f"Label Studio ({exe}; log {data_dir / 'label-studio.log'})", timeout)
            _wait_ready(server, proc, timeout - (time.monotonic() - started))
        except CurationEnvError:
            session.stop(proc)  # past its deadline or dead: nothing of it is left running
            raise
        return server
    proc, port = running
    owned = not alive(state.get("owner"))
    if owned:  # its starter was killed: this session stops it
        session._own(proc)
        _write_state(data_dir, {**state, "owner": os.getpid()})
    server = LabelStudio(f"http://127.0.0.1:{port}", state["token"], state["username"], state["password"],
                         data_dir / IMAGES_DIR, proc if owned else None)
    check(server)
    return server


def _wait_ready(server: LabelStudio, proc: psutil.Process, timeout: float) -> None:
    deadline = time.monotonic() + max(timeout, 1.0)
    while True:
        try:
            check(server, timeout=5.0)
            return
        except CurationEnvError:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                raise CurationEnvError(f"Label Studio (pid {proc.pid}) exited while starting") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _read_state(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return {}


def _write_state(data_dir: Path, state: dict) -> None:
    path = data_dir / STATE_FILE
    write_atomically(path, [json.dumps(state)])
    path.chmod(0o600)


def _running(state: dict, data_dir: Path) -> tuple[psutil.Process, int] | None:
    """The live server of ``data_dir`` named in its state file, with its port."""
    try:
        proc = psutil.Process(state["pid"])
        if proc.status() != psutil.STATUS_ZOMBIE and str(data_dir) in proc.cmdline():
            return proc, int(state["port"])
    except (KeyError, ValueError, psutil.Error):
        pass
    return None
