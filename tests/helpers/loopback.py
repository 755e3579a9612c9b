"""The serving half of the tests' stand-in servers: a threaded HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
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
