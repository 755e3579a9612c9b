"""A real HTTP server on 127.0.0.1 serving archives from memory, for download tests."""

from __future__ import annotations

from collections import Counter
from http.server import BaseHTTPRequestHandler

from helpers.loopback import LoopbackServer


class ArchiveServer(LoopbackServer):
    """A threaded HTTP server: path -> bytes, with stalling, truncating and Range support."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.truncate_once: set[str] = set()
        self.stall: set[str] = set()
        self.hits: Counter = Counter()
        self.ranges: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.hits[self.path] += 1
                if self.path in server.stall:
                    server.release.wait(30)
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if (rng := self.headers.get("Range")) and rng.startswith("bytes="):
                    server.ranges.append(rng)
                    start = int(rng[6:].split("-")[0])
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                truncated = self.path in server.truncate or self.path in server.truncate_once
                server.truncate_once.discard(self.path)
                if truncated:  # announce everything, send half, hang up
                    self.wfile.write(body[start: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        LoopbackServer.__init__(self, Handler)
