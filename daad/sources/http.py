"""HTTP downloads for every source and for the URL list: one place for retries, size
caps, timeouts, sha256 pinning and resume-safe temp files.

``download(url, dest, ...)`` never raises for network trouble: it returns a
:class:`DownloadResult` whose ``reason`` says what went wrong (``dead_link``: an
answered 404/410 only; ``http_error``, ``server_error``, ``timeout``, ``too_slow``,
``too_large``, ``sha256_mismatch``, ``bad_url``, ``bad_redirect``, ``resume_mismatch``,
``network_error``: no answer — offline, DNS, refused, reset — retried like a timeout),
so a batch run records failures and carries on. Callers that want an exception call
:meth:`DownloadResult.raise_for_failure`.

Every wait has a limit that holds against a server that trickles: the response headers
must arrive within ``timeout``, the body must keep up ``min_rate`` bytes a second over
every ``timeout``-long window, and ``deadline`` bounds the whole call; a watchdog thread
shuts the connection down when a limit passes, so no blocked read outlives it. The URL is
percent-encoded where HTTP cannot carry it (spaces, non-ASCII; :func:`quote_url`).
Redirects go only to ``http``/``https`` URLs, and not to private, loopback or link-local
addresses unless the first URL was one (:func:`redirect_refusal`).

Bytes go to ``<dest>.part`` beside ``dest`` and are renamed into place only when
complete (and matching ``sha256`` when one is given). An interrupted download leaves
the ``.part`` file; the next call resumes it with an HTTP ``Range`` request when the
server supports ranges, and starts over otherwise. A ``206`` reply is used only when its
``Content-Range`` starts where the part ends.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import socket
import threading
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
MIN_RATE = 1024
"""Default minimum transfer rate (bytes a second, averaged over ``timeout`` seconds)."""
RETRYABLE = frozenset({"timeout", "too_slow", "network_error", "server_error", "resume_mismatch"})
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
    min_rate: float = MIN_RATE,
    deadline: float | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    headers: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Fetch ``url`` into ``dest`` (atomically), following redirects.

    ``max_bytes`` caps the body (by ``Content-Length`` before reading, and while reading);
    ``timeout`` bounds the connection, the wait for the response headers and each read;
    ``min_rate`` (bytes a second) is the slowest transfer accepted, over every
    ``timeout``-long window; ``deadline`` (seconds) bounds the whole call, retries
    included (``None``: only the limits above). ``retries`` extra attempts follow a
    timeout, a slow transfer, a connection error or a 5xx / 429, with exponential
    ``backoff`` seconds. ``sha256`` pins the bytes: an existing ``dest`` with that hash is
    kept as is, and different bytes fail with ``sha256_mismatch``. ``progress`` is called
    with each chunk's byte count.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return DownloadResult(url, dest, False, "bad_url", f"unsupported scheme {scheme!r}")
    if sha256 is not None and dest.is_file() and sha256_file(dest) == sha256:
        return DownloadResult(url, dest, True, sha256=sha256, size=dest.stat().st_size, cached=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    limits = _Limits(timeout, min_rate, None if deadline is None else time.monotonic() + deadline)
    failure = _Failure("network_error")
    for attempt in range(1, retries + 2):
        try:
            return _attempt(quote_url(url), url, dest, sha256, max_bytes, limits, headers or {}, progress, attempt)
        except _Failure as exc:
            failure = exc
        if failure.reason not in RETRYABLE or attempt > retries:
            break
        pause = backoff * 2 ** (attempt - 1)
        if limits.left() <= pause:
            break
        time.sleep(pause)
    reason = "http_error" if failure.reason == "server_error" else failure.reason
    return DownloadResult(
        url, dest, False, reason, failure.detail, http_status=failure.http_status, attempts=attempt
    )


def _attempt(request_url, url, dest, sha256, max_bytes, limits, headers, progress, attempt) -> DownloadResult:
    part = part_path(dest)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(request_url, headers={"User-Agent": USER_AGENT, **headers})
    if have:
        request.add_header("Range", f"bytes={have}-")
    if limits.left() <= 0:
        raise _Failure("timeout", "the download's deadline passed")
    watchdog = _Watchdog(min(limits.timeout, limits.left()))
    opener = urllib.request.build_opener(
        _TrackedHTTPHandler(watchdog), _TrackedHTTPSHandler(watchdog), _RedirectPolicy(request_url)
    )
    try:
        try:
            response = opener.open(request, timeout=limits.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and have:  # the part is already complete, or stale
                part.unlink(missing_ok=True)
                raise _Failure("resume_mismatch", "server refused the resume range") from None
            raise _http_failure(exc.code, exc.reason) from None
        except (TimeoutError, socket.timeout) as exc:
            raise _Failure("timeout", f"no response within {limits.timeout:g}s ({exc})") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)) or watchdog.fired:
                raise _Failure("timeout", f"no response within {watchdog.seconds:g}s") from None
            raise _Failure("network_error", f"cannot connect: {exc.reason}") from None
        except http.client.InvalidURL as exc:
            raise _Failure("bad_url", str(exc)) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, bad status line
            if watchdog.fired:
                raise _Failure("timeout", f"no response within {watchdog.seconds:g}s") from None
            raise _Failure("network_error", f"{type(exc).__name__}: {exc}") from None
        watchdog.rearm(limits.left())
        with response:
            return _receive(response, url, dest, part, have, sha256, max_bytes, limits, watchdog, progress, attempt)
    finally:
        watchdog.cancel()


def _receive(response, url, dest, part, have, sha256, max_bytes, limits, watchdog, progress, attempt) -> DownloadResult:
    """Read the body of ``response`` into ``part`` (appended when it resumes at ``have``)."""
    status = response.status
    try:
        announced = _announced(response, have, status)
    except _Failure:
        part.unlink(missing_ok=True)
        raise
    resumed = have and status == 206
    if not resumed:
        have = 0
    if announced is not None and announced > max_bytes:
        raise _Failure("too_large", f"{announced} bytes announced, cap is {max_bytes}", status)
    digest = hashlib.sha256()
    if resumed:
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    size = have
    window_start, window_bytes = time.monotonic(), 0
    try:
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := response.read1(CHUNK):
                size += len(chunk)
                window_bytes += len(chunk)
                if size > max_bytes:
                    out.close()
                    part.unlink(missing_ok=True)
                    raise _Failure("too_large", f"body exceeds the cap of {max_bytes} bytes", status)
                out.write(chunk)
                digest.update(chunk)
                if progress is not None:
                    progress(len(chunk))
                now = time.monotonic()
                if limits.left() <= 0:
                    raise _Failure("timeout", f"the download's deadline passed after {size} bytes", status)
                if now - window_start >= limits.timeout:
                    if window_bytes / (now - window_start) < limits.min_rate:
                        raise _Failure(
                            "too_slow",
                            f"{window_bytes} bytes in {now - window_start:.1f}s, below {limits.min_rate:g} bytes/s",
                            status,
                        )
                    window_start, window_bytes = now, 0
    except (TimeoutError, socket.timeout):
        raise _Failure("timeout", f"read stalled for {limits.timeout:g}s after {size} bytes", status) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # connection reset, IncompleteRead
        if watchdog.fired:
            raise _Failure("timeout", f"the download's deadline passed after {size} bytes", status) from None
        raise _Failure("network_error", f"{type(exc).__name__}: {exc}", status) from None
    if watchdog.fired:  # the watchdog shut the socket: what came is not the whole body
        raise _Failure("timeout", f"the download's deadline passed after {size} bytes", status)
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


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _announced(response, have: int, status: int) -> int | None:
    """The full size the response announces (``None`` when unknown). A ``206`` must carry a
    ``Content-Range`` starting at ``have``, the size of the part being resumed; any other
    range is refused (``resume_mismatch``) and the part dropped, so that no wrong bytes are spliced."""
    length = response.headers.get("Content-Length")
    if status != 206:
        return int(length) if length is not None and length.isdigit() else None
    content_range = (response.headers.get("Content-Range") or "").strip()
    match = _CONTENT_RANGE.fullmatch(content_range)
    if match is None or int(match[1]) != have or int(match[2]) < have:
        part_of = content_range or "no Content-Range"
        raise _Failure("resume_mismatch", f"asked for bytes {have}-, the 206 reply holds {part_of}", status)
    return int(match[3]) if match[3] != "*" else (int(match[2]) + 1)


def _http_failure(code: int, message: object) -> _Failure:
    if code in (404, 410):
        return _Failure("dead_link", f"HTTP {code} {message}", code)
    if code == 429 or code >= 500:
        return _Failure("server_error", f"HTTP {code} {message}", code)
    return _Failure("http_error", f"HTTP {code} {message}", code)


def quote_url(url: str) -> str:
    """``url`` as HTTP can carry it: spaces, non-ASCII and other unsafe characters of the
    path and query percent-encoded as UTF-8 (escapes already there kept), a non-ASCII host
    in IDNA, the fragment (never sent) dropped."""
    parts = urllib.parse.urlsplit(url.strip())
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.partition(":")
        netloc = f"{userinfo}{at}{host.encode('idna').decode('ascii')}{colon}{port}"
    path = urllib.parse.quote(parts.path, safe="/%!$&'()*+,;=:@-._~")
    query = urllib.parse.quote(parts.query, safe="/?%!$&'()*+,;=:@-._~")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


def redirect_refusal(start: str, target: str) -> str | None:
    """Why a redirect from ``start`` to ``target`` is refused, or ``None``: only ``http`` and
    ``https``, and no private, loopback, link-local or otherwise non-public address unless
    ``start`` was one (a mirror on the local network, a test server)."""
    scheme = urllib.parse.urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        return f"scheme {scheme or '(none)'!r} is not http or https"
    if _internal_address(start) is not None:
        return None
    internal = _internal_address(target)
    return f"{internal} is a private, loopback or link-local address" if internal else None


def _internal_address(url: str) -> str | None:
    """A non-public address ``url``'s host resolves to, or ``None`` (also when it does not resolve:
    connecting then fails on its own)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError, ValueError):
        return None
    for address in sorted(addresses):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            return address
    return None


@dataclass(frozen=True, slots=True)
class _Limits:
    timeout: float
    min_rate: float
    deadline: float | None
    """``time.monotonic()`` by which the whole call ends, or ``None``."""

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


class _Watchdog:
    """Shuts an attempt's sockets down when its time is up, so that no blocked read (a server
    sending a byte a second never lets a socket timeout fire) outlives the limit."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self.seconds = seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.rearm(seconds)

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shut(sock)

    def rearm(self, seconds: float) -> None:
        """Fire ``seconds`` from now instead (``inf``: never)."""
        self.cancel()
        if seconds != float("inf"):
            self.seconds = seconds
            self._timer = threading.Timer(max(seconds, 0.0), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Tracked:
    """A connection whose socket the watchdog is told about once it connects."""

    def __init__(self, *args, watchdog: _Watchdog, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.track(self.sock)


class _TrackedHTTPConnection(_Tracked, http.client.HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, http.client.HTTPSConnection):
    pass


class _TrackedHTTPHandler(urllib.request.HTTPHandler):
    """Opens connections whose sockets the watchdog can shut."""

    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req):
        return self.do_open(_TrackedHTTPConnection, req, watchdog=self._watchdog)


class _TrackedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def https_open(self, req):
        return self.do_open(_TrackedHTTPSConnection, req, context=self._context, watchdog=self._watchdog)


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only where :func:`redirect_refusal` allows it (``bad_redirect`` otherwise)."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self._start = start

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("location") or headers.get("uri")
        if target:
            target = urllib.parse.urljoin(req.full_url, target)
            refusal = redirect_refusal(self._start, target)
            if refusal is not None:
                fp.close()
                raise _Failure("bad_redirect", f"redirect to {target} refused: {refusal}", code)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return super().redirect_request(req, fp, code, msg, headers, quote_url(newurl))
