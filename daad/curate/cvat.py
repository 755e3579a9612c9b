"""A CVAT server for mask annotation: one somebody runs (daad never starts CVAT), reached
through FiftyOne's own CVAT backend (:mod:`fiftyone.utils.cvat`).

CVAT needs Docker, PostgreSQL and Redis, so unlike Label Studio daad cannot start it: the
user gives its URL (``--cvat-url``), a username (``--cvat-username`` / ``$DAAD_CVAT_USERNAME``)
and the password in ``$DAAD_CVAT_PASSWORD`` (never on a command line). FiftyOne's backend
sends its requests without a timeout and polls for a task's jobs without end; daad runs it
as :class:`daad.curate.cvat_backend.DeadlineCVATBackend` (the same backend with deadlines,
kept apart because it imports FiftyOne, which the curation session must configure first), and
:func:`connect` checks that the server answers and accepts the login, within ``timeout``,
before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from daad.curate.session import CurationEnvError

CONNECT_TIMEOUT_S = 15.0


class CVATError(CurationEnvError):
    """A CVAT server does not answer, refuses the login, or fails a request (names the URL)."""


@dataclass(frozen=True)
class CVAT:
    """How to reach a CVAT server: its URL and an account's login."""

    url: str
    username: str
    password: str

    def credentials(self) -> dict:
        """The keyword arguments FiftyOne's CVAT backend takes for this server."""
        return {"url": self.url, "username": self.username, "password": self.password}


def connect(url: str, username: str, password: str, timeout: float = CONNECT_TIMEOUT_S) -> CVAT:
    """The server at ``url``, checked to answer and to accept the login within ``timeout``
    seconds each; :class:`CVATError` otherwise."""
    server = CVAT(url.rstrip("/"), username, password)
    try:
        about = requests.get(f"{server.url}/api/server/about", timeout=timeout)
        login = requests.post(f"{server.url}/api/auth/login", json={"username": username, "password": password},
                              timeout=timeout)
    except requests.RequestException as exc:
        raise CVATError(f"CVAT at {server.url} does not answer within {timeout:g}s: {exc}; nothing was sent") from None
    if about.status_code >= 400 or "version" not in _json(about):
        raise CVATError(f"CVAT at {server.url}: /api/server/about answers HTTP {about.status_code}, not a CVAT "
                        "server's version; check --cvat-url")
    if login.status_code >= 400:
        raise CVATError(f"CVAT at {server.url} refuses the login of {username!r} (HTTP {login.status_code}); "
                        "check --cvat-username / $DAAD_CVAT_USERNAME and $DAAD_CVAT_PASSWORD")
    return server


def _json(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
