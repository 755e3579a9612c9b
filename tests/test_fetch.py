"""`daad fetch` and daad.sources.http against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from daad.cli import app
from daad.sources.http import download, part_path
from daad.sources.url_images import fetch
from daad.sources.ingest import ingest
from daad.registry.manifest import read_manifest, write_manifest
from daad.record import ImageRef, Record
from daad.registry.roots import fetched_image_path
from daad.taxonomy import Source, Status


def _png(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


GOOD, OTHER = _png(1), _png(2)
BIG = b"\x89PNG" + b"\0" * 300_000


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()
    ranges: list[str] = []
    flaky_left = 1
    served = GOOD

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "image/png", length: bool = True) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts, size caps)
            pass

    def _route(self) -> None:
        cls = type(self)
        cls.hits[self.path] += 1
        if self.path == "/good.png":
            self._send(200, GOOD)
        elif self.path == "/other.png":
            self._send(200, OTHER)
        elif self.path == "/changing.png":
            self._send(200, cls.served)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/other.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/missing.png":
            self._send(404, b"not found", "text/plain")
        elif self.path == "/forbidden.png":
            self._send(403, b"no", "text/plain")
        elif self.path == "/page.jpg":
            self._send(200, b"<html><body>an article</body></html>", "text/html")
        elif self.path == "/garbage.jpg":
            self._send(200, b"definitely not an image", "image/jpeg")
        elif self.path == "/slow.png":
            time.sleep(1.0)
            self._send(200, GOOD)
        elif self.path == "/big.png":
            self._send(200, BIG)
        elif self.path == "/big-unannounced.png":
            self.close_connection = True
            self._send(200, BIG, length=False)
        elif self.path == "/flaky.png":
            if cls.flaky_left > 0:
                cls.flaky_left -= 1
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, GOOD)
        elif self.path == "/ranged.png":
            start = 0
            header = self.headers.get("Range")
            if header:
                cls.ranges.append(header)
                start = int(header.removeprefix("bytes=").rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(GOOD) - 1}/{len(GOOD)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(GOOD) - start))
            self.end_headers()
            self.wfile.write(GOOD[start:])
        else:
            self._send(500, b"?", "text/plain")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _record(name: str, url: str | None, sha256: str | None = None) -> Record:
    return Record(
        id=f"web_test/{name}", anomaly_class="crack", source=Source.ONLINE_SEARCH, origin="web_test",
        native_label="crack", licence="unknown", image=ImageRef(url=url, sha256=sha256), status=Status.NEEDS_IMAGE,
    )


CASES = {
    "good": ("/good.png", None),
    "redirect": ("/redirect", None),
    "missing": ("/missing.png", "dead_link"),
    "forbidden": ("/forbidden.png", "http_error"),
    "html": ("/page.jpg", "not_an_image"),
    "garbage": ("/garbage.jpg", "not_an_image"),
    "slow": ("/slow.png", "network_error"),  # no answer in time: not a verdict, nothing written
    "big": ("/big.png", "too_large"),
    "big_unannounced": ("/big-unannounced.png", "too_large"),
}


def _fetch(manifests: Path, **kw):
    return fetch(manifests, max_bytes=100_000, timeout=0.5, retries=1, backoff=0.01, concurrency=4, progress=False, **kw)


def test_fetch_pins_successes_and_records_each_failure(server, tmp_path):
    manifests = tmp_path / "manifests"
    records = [_record(name, server + path) for name, (path, _) in CASES.items()]
    records.append(_record("good_twice", server + "/good.png"))  # same URL, another record, same time
    records.append(_record("page_only", None))  # an article page: nothing to fetch
    write_manifest(manifests / "web_test.jsonl", records)

    report = _fetch(manifests)

    assert report.fetched == 3
    assert report.failed == Counter(r for _, r in CASES.values() if r)
    after = {r.id.split("/")[1]: r for r in read_manifest(manifests / "web_test.jsonl")}
    for name, (_, reason) in CASES.items():
        assert after[name].reason == (None if reason == "network_error" else reason), name
    assert after["good"].image.sha256 == after["good_twice"].image.sha256 == hashlib.sha256(GOOD).hexdigest()
    assert after["redirect"].image.sha256 == hashlib.sha256(OTHER).hexdigest()
    for name in ("good", "redirect"):
        rec = after[name]
        assert rec.status is Status.NEEDS_MASK and (rec.width, rec.height) == (32, 32) and rec.phash
        assert fetched_image_path(rec.image.sha256).read_bytes() in (GOOD, OTHER)
    assert after["missing"].status is Status.NEEDS_IMAGE and after["missing"].image.sha256 is None
    assert after["page_only"] == records[-1]
    assert not list((tmp_path / "daad-cache").glob("**/*.part"))

    # A second run verifies the cached files without downloading them again.
    hits = _Handler.hits["/good.png"]
    again = _fetch(manifests)
    assert again.verified == 3 and again.fetched == 0 and _Handler.hits["/good.png"] == hits

    # Re-ingesting the source (unpinned records) keeps what fetch pinned.
    report = ingest([_record(name, server + path) for name, (path, _) in CASES.items()], manifests / "web_test.jsonl",
                    allow_remove=True)
    kept = {r.id.split("/")[1]: r for r in read_manifest(manifests / "web_test.jsonl")}
    assert kept["good"].image.sha256 == after["good"].image.sha256 and kept["good"].status is Status.NEEDS_MASK
    assert kept["missing"].reason == "dead_link"
    assert report.removed == 2  # good_twice and page_only are gone from the source


def test_pinned_image_is_verified_against_the_server(server, tmp_path):
    manifests = tmp_path / "manifests"
    _Handler.served = GOOD
    write_manifest(manifests / "web_test.jsonl", [_record("changing", server + "/changing.png")])
    assert _fetch(manifests).fetched == 1
    (pinned,) = read_manifest(manifests / "web_test.jsonl")
    fetched_image_path(pinned.image.sha256).unlink()  # cache lost; the URL now serves other bytes
    _Handler.served = OTHER
    report = _fetch(manifests)
    assert report.failed == {"sha256_mismatch": 1}
    (after,) = read_manifest(manifests / "web_test.jsonl")
    assert after.image.sha256 == pinned.image.sha256 and after.reason == "sha256_mismatch"


def test_download_retries_resumes_and_caps(server, tmp_path):
    _Handler.flaky_left = 1
    flaky = download(server + "/flaky.png", tmp_path / "flaky.png", max_bytes=10**6, timeout=2, retries=2, backoff=0.01)
    assert flaky.ok and flaky.attempts == 2 and (tmp_path / "flaky.png").read_bytes() == GOOD

    dest = tmp_path / "ranged.png"
    part_path(dest).write_bytes(GOOD[:100])  # an interrupted earlier download
    resumed = download(server + "/ranged.png", dest, sha256=hashlib.sha256(GOOD).hexdigest(), max_bytes=10**6, timeout=2)
    assert resumed.ok and resumed.http_status == 206 and dest.read_bytes() == GOOD
    assert _Handler.ranges[-1] == "bytes=100-" and not part_path(dest).exists()

    cached = download(server + "/ranged.png", dest, sha256=resumed.sha256, max_bytes=10**6, timeout=2)
    assert cached.cached and cached.attempts == 0

    wrong = download(server + "/good.png", tmp_path / "x.png", sha256="0" * 64, max_bytes=10**6, timeout=2, retries=3)
    assert wrong.reason == "sha256_mismatch" and wrong.attempts == 1 and not (tmp_path / "x.png").exists()
    assert download("ftp://example.org/a.png", tmp_path / "y", max_bytes=1).reason == "bad_url"
    refused = download("http://127.0.0.1:9/a.png", tmp_path / "z", max_bytes=1, timeout=1, retries=0)
    assert refused.reason == "network_error"  # no answer is not a verdict on the link
    with pytest.raises(Exception, match="network_error"):
        refused.raise_for_failure()


def test_fetch_cli(server, tmp_path):
    manifests = tmp_path / "manifests"
    write_manifest(manifests / "web_test.jsonl", [_record("good", server + "/good.png"), _record("gone", server + "/missing.png")])
    result = CliRunner().invoke(app, ["fetch", "--manifests", str(manifests), "--origin", "web_test", "--json", "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert '"fetched": 1' in result.output and '"dead_link": 1' in result.output
