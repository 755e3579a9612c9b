"""kill -9 at random moments (20 times each) during ingest, fetch, curate sync, synth and
exclusions hash: every manifest stays parseable and equal to its state before or after the
command, and no partial file or folder is left where a reader or loader would look."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SD_ROOT, SOURCE_ROOTS, copy_manifests
from daad.curate.sync import sync
from daad.registry.manifest import dumps, manifest_paths, read_manifest, write_manifest
from daad.record import ImageRef, Record
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.taxonomy import Source, Status
from helpers.curation import shared_session, subset_manifests
from helpers.kill import KILLS, daad_command, kill_moments, run_and_kill, timed_run, visible_files

CF_ROOT = SOURCE_ROOTS["crackforest"]


def _small_crackforest(dest: Path, images: int = 30) -> Path:
    """The real CrackForest tree with only its first ``images`` images (and their labels)."""
    keep = {f"{n:03d}" for n in range(1, images + 1)}
    return Path(shutil.copytree(CF_ROOT, dest, ignore=lambda d, names: [
        n for n in names if Path(n).stem.isdigit() and Path(n).stem not in keep]))


def _lines(path: Path) -> dict[str, str]:
    """id -> line of a manifest, parsing (and so checking) every line."""
    return {r.id: dumps(r) for r in read_manifest(path)}


def _kill_while_writing(command: list[str], window: float, path: Path, before: bytes, after: bytes, folder: Path,
                        seed: int, check: Callable[[], None] = lambda: None) -> None:
    """Kill ``command`` at ``KILLS`` moments over ``window``, each run starting from ``path`` holding
    ``before``: ``path`` ends as ``before`` or ``after``, ``folder`` gains or loses no visible file,
    ``check`` holds, and enough kills land while it runs (not only after it finished)."""
    names = set(visible_files(folder))
    killed = 0
    for moment in kill_moments(window, seed=seed):
        path.write_bytes(before)
        killed += run_and_kill(command, dict(os.environ), moment)
        assert path.read_bytes() in (before, after)
        assert set(visible_files(folder)) == names
        check()
    assert killed >= KILLS // 4


def test_kill_during_ingest(tmp_path):
    manifests = copy_manifests(tmp_path / "manifests")
    manifest = manifests / "crackforest.jsonl"
    command = daad_command("ingest", "crackforest", "--root", f"crackforest={_small_crackforest(tmp_path / 'cf')}",
                           "--manifests", str(manifests))
    window = timed_run(command, dict(os.environ))
    after = manifest.read_bytes()
    write_manifest(manifest, list(read_manifest(manifest))[3:])  # the run adds three records back
    before = manifest.read_bytes()

    def check() -> None:
        assert [p.name for p in manifest_paths(manifests)] == [manifest.name]
        _lines(manifest)

    _kill_while_writing(command, window, manifest, before, after, manifests, seed=1, check=check)
    manifest.write_bytes(before)
    timed_run(command, dict(os.environ))  # the next write clears what killed writers left
    assert not list(manifests.glob(".crackforest.jsonl.*")) and manifest.read_bytes() == after


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class _SlowImages(BaseHTTPRequestHandler):
    """``/img/<n>.png``: a distinct PNG after a short delay; anything else: 404."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/img/") and name.endswith(".png"):
            time.sleep(0.03)
            body, code = _png(int(name[:-4])), 200
        else:
            body, code = b"gone", 404
        try:
            self.send_response(code)
            self.send_header("Content-Type", "image/png" if code == 200 else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_kill_during_fetch(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowImages)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        manifests = tmp_path / "manifests"
        urls = [f"{base}/img/{n}.png" for n in range(16)] + [f"{base}/gone/{n}.png" for n in range(3)]
        write_manifest(manifests / "web_test.jsonl", [
            Record(id=f"web_test/{n:02d}", anomaly_class="crack", source=Source.ONLINE_SEARCH, origin="web_test",
                   native_label="crack", licence="unknown", image=ImageRef(url=url), status=Status.NEEDS_IMAGE)
            for n, url in enumerate(urls)
        ])
        manifest = manifests / "web_test.jsonl"
        before_bytes = manifest.read_bytes()
        before = _lines(manifest)
        command = daad_command("fetch", "--manifests", str(manifests), "--workers", "2", "--quiet", "--timeout", "5")

        def env(cache: str) -> dict[str, str]:
            return {**os.environ, "DAAD_CACHE_DIR": str(tmp_path / cache)}

        window = timed_run(command, env("cache-ref"))
        after = _lines(manifest)
        assert sum(before[i] != after[i] for i in before) == len(urls)  # 16 pinned, 3 dead links

        killed = 0
        for i, moment in enumerate(kill_moments(window, seed=2)):
            manifest.write_bytes(before_bytes)
            killed += run_and_kill(command, env(f"cache-{i}"), moment)
            now = _lines(manifest)
            assert now.keys() == before.keys() and all(now[i] in (before[i], after[i]) for i in now)
            assert [p.name for p in manifests.iterdir() if not p.name.startswith(".")] == ["web_test.jsonl"]
            for path in (tmp_path / f"cache-{i}" / "fetched").glob("*/*"):  # the cache holds whole images only
                assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
        assert killed >= KILLS // 4
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
def test_kill_during_curate_sync(tmp_path):
    session = shared_session()
    registry = Registry(subset_manifests(tmp_path / "manifests"), Roots({"sd_saliency_900": SD_ROOT}))
    manifest = registry.manifests_dir / "sd_saliency_900.jsonl"
    from daad.curate.dataset import open_records

    name = "kill-sync"
    dataset, _ = open_records(session, registry, registry.records(), name, masks_dir=tmp_path / "masks")
    ids = sorted(dataset.values("record_id"))
    fo = session.fiftyone()
    command = daad_command("curate", "sync", "--name", name, "--database-dir", str(session.database_dir),
                           "--who", "killer", "--json")

    def reject(record_id: str) -> None:
        sample = dataset.one(fo.ViewField("record_id") == record_id)
        sample.tags += ["reject", f"reason:kill_{record_id.rsplit('/', 1)[1]}"]
        sample.save()

    reject(ids[0])
    window = timed_run(command, dict(os.environ))
    killed = 0
    for record_id, moment in zip(ids[1:], kill_moments(window, seed=3)):
        reject(record_id)
        before = _lines(manifest)
        planned = sync(session, name, dry_run=True)
        after = before | {c.record_id: dumps(c.after) for c in planned.changes + planned.recovered}
        killed += run_and_kill(command, dict(os.environ), moment)
        now = _lines(manifest)
        assert all(now[i] in (before[i], after[i]) for i in now)
        assert [p.name for p in manifest_paths(registry.manifests_dir)] == [manifest.name]
    assert killed >= KILLS // 4

    # The next sync finishes whatever the kills interrupted: no conflict, each decision once.
    dataset.reload()
    final = sync(session, name, who="finisher")
    assert final.conflicts == []
    rejected = {r.id: r.reason for r in read_manifest(manifest) if r.status is Status.REJECTED}
    assert rejected == {rid: f"kill_{rid.rsplit('/', 1)[1]}" for rid in ids[: KILLS + 1]}
    from daad.curate.journal import read_log

    assert sorted(e["id"] for e in read_log(registry.manifests_dir)) == ids[: KILLS + 1]


@pytest.mark.slow
def test_kill_during_synth(tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    for stem in ("In_1", "Pa_1", "Sc_1", "Sc_2"):
        shutil.copy(SD_ROOT / "Source Images" / f"{stem}.bmp", targets)
    work = tmp_path / "work"
    out = work / "out"

    def command(seed: int) -> list[str]:
        return daad_command("synth", "cutpaste", "--targets", str(targets), "--eval", "none", "--out", str(out),
                            "--per-target", "4", "--size", "64", "--workers", "1", "--seed", str(seed), "--quiet")

    timed_run(command(2), dict(os.environ))
    after = visible_files(out)
    window = timed_run(command(1), dict(os.environ))
    before = visible_files(out)
    assert before != after and "README.md" in before
    shutil.copytree(out, tmp_path / "before")

    killed = 0
    for moment in kill_moments(window, seed=4):
        shutil.rmtree(out)
        shutil.copytree(tmp_path / "before", out)
        killed += run_and_kill(command(2), dict(os.environ), moment)
        assert visible_files(out) in (before, after)
        assert [p.name for p in work.iterdir() if not p.name.startswith(".")] == ["out"]
    assert killed >= KILLS // 4


def test_kill_during_exclusions_hash(tmp_path):
    manifests = copy_manifests(tmp_path / "manifests")
    path = manifests / "eval_hashes" / "crackforest.txt"
    command = daad_command("exclusions", "hash", "crackforest", "--root", f"crackforest={_small_crackforest(tmp_path / 'cf')}",
                           "--manifests", str(manifests), "--quiet")
    window = timed_run(command, dict(os.environ))
    after = path.read_bytes()
    before = b"".join(after.splitlines(keepends=True)[:-20])
    _kill_while_writing(command, window, path, before, after, manifests, seed=5)
