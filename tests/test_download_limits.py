"""Downloads against hostile servers on 127.0.0.1: every wait ends, redirects stay on HTTP(S)
and public addresses, a resumed reply must start where the part ends, URLs with spaces and
non-ASCII are encoded, and ``daad fetch`` saves what it pinned as it goes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, copy_manifests
from daad.sources.http import download, part_path, quote_url, redirect_refusal
from daad.registry.manifest import read_manifest, write_manifest
from daad.record import ImageRef, Record
from daad.taxonomy import Source, Status

BODY = bytes(range(256)) * 40  # 10 240 bytes
SLOW = BODY[:2000]


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class _Hostile(BaseHTTPRequestHandler):
    stop = threading.Event()
    files: dict[str, bytes] = {}

    def log_message(self, *args) -> None:
        pass

    def _trickle(self, data: bytes, every: float) -> None:
        for i in range(len(data)):
            if self.stop.wait(every):
                return
            try:
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return

    def do_GET(self) -> None:
        if self.path == "/trickle-body":  # headers at once, then one byte a second
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self._trickle(BODY, 1.0)
        elif self.path == "/trickle-headers":  # even the status line comes a byte a second
            self._trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 1.0)
        elif self.path == "/slow":  # 400 bytes a second: steady, but below the minimum rate
            self.send_response(200)
            self.send_header("Content-Length", str(len(SLOW)))
            self.end_headers()
            for i in range(0, len(SLOW), 20):
                if self.stop.wait(0.05):
                    return
                try:
                    self.wfile.write(SLOW[i : i + 20])
                    self.wfile.flush()
                except OSError:
                    return
        elif self.path.startswith("/redirect-to?"):
            self.send_response(302)
            self.send_header("Location", self.path.split("?", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/wrong-range":  # answers a resume with the start of the file, as 206
            rng = self.headers.get("Range")
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes 0-{len(BODY) - 1}/{len(BODY)}")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/range-without-header":
            self.send_response(206)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path in self.files:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(self.files[self.path])))
            self.end_headers()
            self.wfile.write(self.files[self.path])
        elif self.path == "/stall":
            self.stop.wait(60)
        else:
            self.send_error(404, f"no {self.path}")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Hostile.stop.set()
    httpd.shutdown()
    httpd.server_close()


def _timed(call):
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def test_a_server_sending_a_byte_a_second_is_dropped(server, tmp_path):
    # Before: response.read(65536) gathered the bytes for as long as they came (60 s and more).
    result, took = _timed(lambda: download(server + "/trickle-body", tmp_path / "a", max_bytes=10**6, timeout=2, retries=0))
    assert not result.ok and result.reason == "too_slow" and "below 1024 bytes/s" in result.detail
    assert took < 10  # one 2 s window, not the 10 240 s the body would take


def test_headers_that_trickle_meet_the_timeout(server, tmp_path):
    result, took = _timed(lambda: download(server + "/trickle-headers", tmp_path / "b", max_bytes=10**6, timeout=2, retries=0))
    assert not result.ok and result.reason == "timeout"
    assert took < 10


def test_the_total_deadline_holds_over_retries(server, tmp_path):
    result, took = _timed(lambda: download(
        server + "/trickle-body", tmp_path / "c", max_bytes=10**6, timeout=2, retries=5, backoff=0.1, deadline=3
    ))
    assert not result.ok and result.reason in ("timeout", "too_slow")
    assert took < 8  # without the deadline: six attempts of at least 2 s each


def test_the_minimum_rate_is_a_parameter(server, tmp_path):
    slow = download(server + "/slow", tmp_path / "d", max_bytes=10**6, timeout=1, min_rate=1000, retries=0)
    assert not slow.ok and slow.reason == "too_slow"
    patient = download(server + "/slow", tmp_path / "e", max_bytes=10**6, timeout=1, min_rate=50, retries=0, deadline=120)
    assert patient.ok and (tmp_path / "e").read_bytes() == SLOW


def test_redirects_to_other_schemes_are_refused(server, tmp_path):
    for target in ("ftp://127.0.0.1/x.png", "file:///etc/passwd"):
        result = download(f"{server}/redirect-to?{target}", tmp_path / "f", max_bytes=10**6, timeout=2, retries=0)
        assert not result.ok and result.reason == "bad_redirect", result
        assert f"redirect to {target} refused: scheme {target.split(':')[0]!r} is not http or https" in result.detail
        assert not (tmp_path / "f").exists()


def test_redirects_to_internal_addresses_are_refused_from_public_ones():
    public = "http://93.184.215.14/image.png"
    for internal in ("http://10.255.255.1/x", "http://169.254.169.254/latest/meta-data", "http://127.0.0.1:9/",
                     "http://[::1]/x", "http://192.168.1.1/"):
        refusal = redirect_refusal(public, internal)
        assert refusal is not None and "private, loopback or link-local" in refusal, internal
    assert redirect_refusal(public, "http://93.184.215.15/other.png") is None
    assert redirect_refusal("http://127.0.0.1:8000/a", "http://10.0.0.2/b") is None  # a local mirror may
    assert "not http or https" in redirect_refusal("http://127.0.0.1:8000/a", "ftp://127.0.0.1/b")


def test_a_loopback_redirect_is_followed_when_the_start_was_loopback(server, tmp_path):
    _Hostile.files["/ok.png"] = _png(1)
    result = download(f"{server}/redirect-to?{server}/ok.png", tmp_path / "g", max_bytes=10**6, timeout=2, retries=0)
    assert result.ok and (tmp_path / "g").read_bytes() == _Hostile.files["/ok.png"]


@pytest.mark.parametrize("path", ["/wrong-range", "/range-without-header"])
def test_a_206_must_start_where_the_part_ends(server, tmp_path, path):
    dest = tmp_path / "h"
    part_path(dest).write_bytes(BODY[:1000])
    refused = download(server + path, dest, max_bytes=10**6, timeout=2, retries=0)
    assert not refused.ok and refused.reason == "resume_mismatch" and "asked for bytes 1000-" in refused.detail
    assert not part_path(dest).exists() and not dest.exists()  # nothing spliced
    if path == "/wrong-range":  # the next attempt starts over, and gets the right bytes
        part_path(dest).write_bytes(BODY[:1000])
        again = download(server + path, dest, max_bytes=10**6, timeout=2, retries=1, backoff=0.01)
        assert again.ok and dest.read_bytes() == BODY and again.attempts == 2


def test_urls_with_spaces_and_non_ascii_are_encoded(server, tmp_path):
    assert quote_url("https://ex.com/a b/铸件-B-236x300.jpg?q=x y") == (
        "https://ex.com/a%20b/%E9%93%B8%E4%BB%B6-B-236x300.jpg?q=x%20y"
    )
    assert quote_url("https://ex.com/already%20done.jpg") == "https://ex.com/already%20done.jpg"
    assert quote_url("http://bücher.example/x").startswith("http://xn--bcher-kva.example/")
    _Hostile.files["/a%20b/%E9%93%B8%E4%BB%B6-B-236x300.jpg"] = _png(2)
    result = download(f"{server}/a b/铸件-B-236x300.jpg", tmp_path / "i", max_bytes=10**6, timeout=2, retries=0)
    assert result.ok and result.url == f"{server}/a b/铸件-B-236x300.jpg"
    bad = download(f"{server}/x\r\nHost: evil", tmp_path / "j", max_bytes=10**6, timeout=2, retries=0)
    assert not bad.ok and bad.reason in ("bad_url", "dead_link")  # never an exception out of download()


def _url_record(origin: str, n: int, url: str) -> Record:
    return Record(
        id=f"{origin}/{n:03d}", anomaly_class="crack", source=Source.ONLINE_SEARCH, origin=origin,
        native_label="crack", licence="unknown", image=ImageRef(url=url), status=Status.NEEDS_IMAGE,
    )


def test_fetch_saves_what_it_pinned_before_the_run_ends(server, tmp_path):
    manifests = copy_manifests(tmp_path / "manifests")
    for n in range(3):
        _Hostile.files[f"/img%20{n}.png"] = _png(10 + n)  # as the request line carries it
    records = [_url_record("web_test", n, f"{server}/img {n}.png") for n in range(3)]
    records.append(_url_record("web_test", 9, f"{server}/stall"))  # never answers
    write_manifest(manifests / "web_test.jsonl", records)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            from daad.sources.url_images import fetch
            fetch({str(manifests)!r}, ["web_test"], timeout=50, retries=0, progress=False, save_every=0.5)
        """)],
        cwd=REPO, env=env,
    )
    try:
        pinned: list[Record] = []
        for _ in range(100):  # the stalled record keeps the run going for 50 s
            time.sleep(0.2)
            pinned = [r for r in read_manifest(manifests / "web_test.jsonl") if r.image.sha256]
            if len(pinned) == 3:
                break
        assert child.poll() is None  # still running: saved as it went, not at the end
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert [r.id for r in pinned] == [r.id for r in records[:3]]
    assert all(r.status is Status.NEEDS_MASK for r in pinned)
    for r, n in zip(pinned, range(3)):
        assert r.image.sha256 == hashlib.sha256(_Hostile.files[f"/img%20{n}.png"]).hexdigest()
