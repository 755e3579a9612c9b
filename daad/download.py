"""HTTP downloads for every source and for the URL list: one place for retries, size
caps, timeouts, sha256 pinning and resume-safe temp files.

``download(url, dest, ...)`` never raises for network trouble: it returns a
:class:`DownloadResult` whose ``reason`` says what went wrong (``dead_link``,
``http_error``, ``timeout``, ``too_large``, ``sha256_mismatch``, ``bad_url``,
``network_error``), so a batch run records failures and carries on. Callers that want
an exception call :meth:`DownloadResult.raise_for_failure`.

Bytes go to ``<dest>.part`` beside ``dest`` and are renamed into place only when
complete (and matching ``sha256`` when one is given). An interrupted download leaves
the ``.part`` file; the next call resumes it with an HTTP ``Range`` request when the
server supports ranges, and starts over otherwise.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daad.errors import DaadError
from daad.images import sha256_file

USER_AGENT = "daad-downloader/0.1 (+https://github.com/HU13-SVG/Cross-domain-Anomaly-Injection)"
CHUNK = 1 << 16
RETRYABLE = frozenset({"timeout", "network_error", "server_error", "resume_mismatch"})
"""Reasons worth another attempt; the others (404, too large, wrong hash) are final."""


class DownloadError(DaadError):
    """A download failed; names the URL and the reason."""

    def __init__(self, result: DownloadResult) -> None:
        self.result = result
        super().__init__(f"{result.url}: {result.reason}" + (f": {result.detail}" if result.detail else ""))


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What one ``download`` call did."""

    url: str
    dest: Path
    ok: bool
    reason: str | None = None
    """``None`` on success, else a short key (see the module docstring)."""
    detail: str = ""
    sha256: str | None = None
    size: int = 0
    http_status: int | None = None
    content_type: str | None = None
    final_url: str | None = None
    """Where redirects ended."""
    attempts: int = 0
    cached: bool = False
    """``dest`` already held the pinned bytes; nothing was transferred."""

    def raise_for_failure(self) -> DownloadResult:
        if not self.ok:
            raise DownloadError(self)
        return self


class _Failure(Exception):
    def __init__(self, reason: str, detail: str = "", http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.detail, self.http_status = reason, detail, http_status


def part_path(dest: Path) -> Path:
    """The temp file a download of ``dest`` writes to until it is complete."""
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    max_bytes: int,
    timeout: float = 30.0,
    transfer_timeout: float | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    headers: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Fetch ``url`` into ``dest`` (atomically), following redirects.

    ``max_bytes`` caps the body (by ``Content-Length`` before reading, and while reading);
    ``timeout`` bounds each connection and each read, and ``transfer_timeout`` (default:
    ``timeout``) each attempt as a whole (``math.inf`` for multi-GB archives);
    ``retries`` extra attempts follow a timeout, a connection error or a 5xx / 429, with
    exponential ``backoff`` seconds. ``sha256`` pins the bytes: an existing ``dest`` with
    that hash is kept as is, and different bytes fail with ``sha256_mismatch``.
    ``progress`` is called with each chunk's byte count.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return DownloadResult(url, dest, False, "bad_url", f"unsupported scheme {scheme!r}")
    if sha256 is not None and dest.is_file() and sha256_file(dest) == sha256:
        return DownloadResult(url, dest, True, sha256=sha256, size=dest.stat().st_size, cached=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failure = _Failure("network_error")
    for attempt in range(1, retries + 2):
        try:
            return _attempt(url, dest, sha256, max_bytes, timeout, transfer_timeout, headers or {}, progress, attempt)
        except _Failure as exc:
            failure = exc
        if failure.reason not in RETRYABLE or attempt > retries:
            break
        time.sleep(backoff * 2 ** (attempt - 1))
    reason = "http_error" if failure.reason == "server_error" else failure.reason
    return DownloadResult(
        url, dest, False, reason, failure.detail, http_status=failure.http_status, attempts=attempt
    )


def _attempt(url, dest, sha256, max_bytes, timeout, transfer_timeout, headers, progress, attempt) -> DownloadResult:
    part = part_path(dest)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if have:
        request.add_header("Range", f"bytes={have}-")
    limit = timeout if transfer_timeout is None else transfer_timeout
    deadline = time.monotonic() + limit
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:  # the part is already complete, or stale
            part.unlink(missing_ok=True)
            raise _Failure("resume_mismatch", "server refused the resume range") from None
        raise _http_failure(exc.code, exc.reason) from None
    except (TimeoutError, socket.timeout) as exc:
        raise _Failure("timeout", f"no response within {timeout:g}s ({exc})") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise _Failure("timeout", f"no response within {timeout:g}s") from None
        raise _Failure("dead_link", f"cannot connect: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # malformed URL, connection reset, bad status line
        raise _Failure("network_error", f"{type(exc).__name__}: {exc}") from None
    with response:
        status = response.status
        resumed = have and status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        announced = have + int(length) if length is not None and length.isdigit() else None
        if announced is not None and announced > max_bytes:
            raise _Failure("too_large", f"{announced} bytes announced, cap is {max_bytes}", status)
        digest = hashlib.sha256()
        if resumed:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        size = have
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := response.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        out.close()
                        part.unlink(missing_ok=True)
                        raise _Failure("too_large", f"body exceeds the cap of {max_bytes} bytes", status)
                    if time.monotonic() > deadline:
                        raise _Failure("timeout", f"transfer took longer than {limit:g}s", status)
                    out.write(chunk)
                    digest.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
        except (TimeoutError, socket.timeout):
            raise _Failure("timeout", f"read stalled for {timeout:g}s after {size} bytes", status) from None
        except (OSError, ValueError) as exc:  # connection reset, IncompleteRead
            raise _Failure("network_error", f"{type(exc).__name__}: {exc}", status) from None
        if announced is not None and size < announced:
            # http.client returns a short body without complaint: keep the part to resume from.
            raise _Failure("network_error", f"connection closed after {size} of {announced} bytes", status)
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256:
            part.unlink(missing_ok=True)
            if resumed:
                raise _Failure("resume_mismatch", "resumed bytes do not match the pinned sha256", status)
            raise _Failure("sha256_mismatch", f"expected {sha256}, got {actual}", status)
        os.replace(part, dest)
        return DownloadResult(
            url, dest, True, sha256=actual, size=size, http_status=status,
            content_type=response.headers.get_content_type(), final_url=response.geturl(), attempts=attempt,
        )


def _http_failure(code: int, message: object) -> _Failure:
    if code in (404, 410):
        return _Failure("dead_link", f"HTTP {code} {message}", code)
    if code == 429 or code >= 500:
        return _Failure("server_error", f"HTTP {code} {message}", code)
    return _Failure("http_error", f"HTTP {code} {message}", code)
