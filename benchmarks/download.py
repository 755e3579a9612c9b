"""Download-and-prepare throughput on the real sources, from a local HTTP server, next to
the same bytes fetched with urllib and unpacked with ``zipfile.extractall`` (no checks).

Run: ``python benchmarks/download.py``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import REPO, SOURCE_ROOTS  # noqa: E402  (puts the checkout on sys.path)

from daad.registry.catalogue import Catalogue  # noqa: E402
from daad.sources.archive_sources import PrepareOptions, prepare_source  # noqa: E402
from daad.registry import Registry  # noqa: E402
from daad.registry.roots import Roots  # noqa: E402

SOURCES = SOURCE_ROOTS


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="daad-bench-download-"))
    catalogue = Catalogue.load(REPO / "manifests")
    served = work / "served"
    for origin, root in SOURCES.items():
        spec = catalogue[origin].download
        path = served / spec.url.split("://", 1)[1].split("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    zf.write(p, f"{spec.subpath}/{p.relative_to(root).as_posix()}")
        path.write_bytes(buffer.getvalue())
    handler = partial(QuietHandler, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    try:
        for origin in SOURCES:
            entry = catalogue[origin]
            url = base + "/" + entry.download.url.split("://", 1)[1].split("/", 1)[1]
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as head:
                size = int(head.headers["Content-Length"])

            plain = work / f"plain-{origin}"
            t = time.perf_counter()
            with urllib.request.urlopen(url) as response:
                data = response.read()
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                zf.extractall(plain)
            baseline = time.perf_counter() - t

            data_dir = work / f"data-{origin}"
            registry = Registry(REPO / "manifests", Roots(data=data_dir))
            options = PrepareOptions(data=data_dir, accepted=frozenset({entry.licence}), base_url=base, progress=False)
            t = time.perf_counter()
            outcome = prepare_source(registry, entry, options)
            seconds = time.perf_counter() - t
            t = time.perf_counter()
            again = prepare_source(registry, entry, options)
            rerun = time.perf_counter() - t
            print(
                f"{origin:16s} archive {size / 1e6:7.1f} MB  files verified {outcome.files:4d}  "
                f"prepare {seconds:6.2f} s ({size / 1e6 / seconds:6.1f} MB/s)  "
                f"urllib+extractall {baseline:6.2f} s  ratio {seconds / baseline:4.2f}x  "
                f"re-run {rerun * 1000:5.1f} ms ({again.status})"
            )
            shutil.rmtree(plain)
    finally:
        httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
