"""The serving half of the tests' stand-in servers: a threaded HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Serves ``handler`` on a free port of 127.0.0.1 from a daemon thread; ``release`` is set
    on :meth:`close`, so a handler made to hang (``release.wait``) ends with the server."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def dispatching(handle, methods: tuple[str, ...]) -> type[BaseHTTPRequestHandler]:
    """A quiet HTTP/1.1 handler class sending each request of ``methods`` to ``handle(request, method)``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

    for method in methods:
        setattr(Handler, f"do_{method}", lambda self, method=method: handle(self, method))
    return Handler


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    """The request body, sent with a Content-Length or chunked."""
    if h.headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(h.rfile.readline().split(b";")[0], 16)
            if size == 0:
                h.rfile.readline()
                return b"".join(parts)
            parts.append(h.rfile.read(size))
            h.rfile.readline()
    return h.rfile.read(int(h.headers.get("content-length") or 0))


def reply(h: BaseHTTPRequestHandler, status: int, payload: dict | None, cookies: Sequence[str] = ()) -> None:
    """A JSON answer (an empty body for ``None``), setting ``cookies``."""
    data = b"" if payload is None else json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for cookie in cookies:
        h.send_header("Set-Cookie", cookie)
    h.end_headers()
    h.wfile.write(data)


def route(routes: Sequence[tuple[str, str, Callable]], method: str, path: str) -> tuple[Callable, tuple[str, ...]] | None:
    """The handler of the first ``(method, path pattern, handler)`` matching the request, and the pattern's groups."""
    for verb, pattern, handler in routes:
        match = re.fullmatch(pattern, path)
        if verb == method and match:
            return handler, match.groups()
    return None
