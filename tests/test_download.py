"""``daad download`` / ``daad build`` on a fresh machine, against a real HTTP server on 127.0.0.1.

The server serves git-archive-like zips (``<repo>-<commit>/...``) built from the real
data beside the checkout; the catalogue's base URL points at it. Bad archives and bad
servers each give a clear error and leave no source folder behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, SD_ROOT, SHARED_DATA, copy_manifests
from helpers.archive_server import ArchiveServer
from daad.sources.archives import UnsafeArchiveError, unpack
from daad.registry.catalogue import Catalogue
from daad.sources.http import download
from daad.licences import LicenceCatalogue, LicencePolicy
from daad.registry.manifest import read_manifest, write_manifest
from daad.sources.archive_sources import (
    DOWNLOADED, PRESENT, SKIPPED, PrepareOptions, archive_path, SourceDownloadError, prepare, prepare_source,
)
from daad.registry import Registry
from daad.registry.roots import Roots

CF_ROOT = SHARED_DATA / "crackforest"
SD_LICENCE = "LicenseRef-SD-saliency-900-research"
CF_LICENCE = "LicenseRef-CrackForest-NonCommercial"


def _zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, target in (links or {}).items():  # links first, as an attacker would order them
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        for name, data in sorted(entries.items()):
            zf.writestr(name, data)
    return buffer.getvalue()


def _tree(root: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(root).as_posix()}": p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _path_of(catalogue: Catalogue, origin: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(catalogue[origin].download.url).path


@pytest.fixture(scope="session")
def server():
    """Serves the real SD-saliency-900 and CrackForest trees as the catalogue's commit archives."""
    srv = ArchiveServer()
    catalogue = Catalogue.load(REPO / "manifests")
    for origin, root in (("sd_saliency_900", SD_ROOT), ("crackforest", CF_ROOT)):
        spec = catalogue[origin].download
        entries = _tree(root, spec.subpath)
        # Files outside the subpath (the rest of the repository) are not unpacked.
        entries[f"{spec.subpath.split('/')[0]}/README.md"] = b"# the repository's other files\n"
        srv.files[_path_of(catalogue, origin)] = _zip(entries)
    yield srv
    srv.close()


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A newcomer's environment: empty data dir, no config, no accepted licences."""
    data = tmp_path / "data"
    monkeypatch.setenv("DAAD_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DAAD_ACCEPT_LICENCES", raising=False)
    monkeypatch.delenv("DAAD_DOWNLOAD_BASE_URL", raising=False)
    return data


def _run(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daad", *args], cwd=cwd, env=os.environ | {"PYTHONPATH": str(REPO)} | env,
        capture_output=True, text=True, timeout=600,
    )


def _keep_downloads(manifests: Path, *origins: str) -> None:
    """Keep only ``origins``' tables in the scratch downloads.toml (the archive-pinned sources are
    served and built in test_archive_sources.py)."""
    import tomllib

    table = tomllib.loads((manifests / "downloads.toml").read_text())
    (manifests / "downloads.toml").write_text("".join(
        f"[{o}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table[o].items()) for o in origins
    ))


def test_fresh_machine_one_command_build_then_load_dataset(server, fresh, tmp_path):
    manifests = copy_manifests(tmp_path / "manifests", "sd_saliency_900", "crackforest")
    _keep_downloads(manifests, "sd_saliency_900", "crackforest")
    env = {"DAAD_DATA_DIR": str(fresh), "DAAD_DOWNLOAD_BASE_URL": server.url,
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}
    catalogue = Catalogue.load(manifests)
    paths = [_path_of(catalogue, o) for o in ("sd_saliency_900", "crackforest")]
    before = Counter({p: server.hits[p] for p in paths})

    # Without accepting the licences nothing is fetched; the table says which licence and where.
    result = _run("build", "--manifests", str(manifests), "--out", "daad", "-q", cwd=tmp_path, env=env)
    assert result.returncode != 0
    table = " ".join(result.stdout.replace("│", " ").split())
    assert f"{SD_LICENCE} not accepted; read it at https://github.com/SongGuorong/MCITF" in table
    assert f"--accept-licence {SD_LICENCE}" in table and f"--accept-licence {CF_LICENCE}" in table
    assert not (tmp_path / "daad").exists()
    assert all(server.hits[p] == before[p] for p in paths)

    result = _run("build", "--manifests", str(manifests), "--out", "daad", "-q",
                  "--accept-licence", SD_LICENCE, "--accept-licence", CF_LICENCE, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "built 1013 rows" in result.stdout  # five SD-saliency-900 pictures are near copies of five others
    assert all(server.hits[p] == before[p] + 1 for p in paths)
    state = json.loads((fresh / ".daad" / "sd_saliency_900.json").read_text())
    assert state["files_verified"] == 900
    assert not (fresh / "sd_saliency_900" / "README.md").exists()  # only the subpath was unpacked
    assert not list((fresh / ".daad" / "archives").iterdir())  # archives removed once unpacked

    code = "import datasets; ds = datasets.load_dataset('daad', split='train'); print(ds.num_rows, sorted(set(ds['origin'])))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=os.environ | {"HF_DATASETS_OFFLINE": "1"})
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().splitlines()[-1] == "1013 ['crackforest', 'sd_saliency_900']"

    # Re-running downloads nothing.
    again = _run("download", "--manifests", str(manifests), "--origin", "sd_saliency_900", "--origin", "crackforest",
                 "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert [o["status"] for o in json.loads(again.stdout)] == [PRESENT, PRESENT]
    assert all(server.hits[p] == before[p] + 1 for p in paths)


def test_commercial_policy_skips_and_manual_sources_say_how(server, fresh, tmp_path):
    manifests = copy_manifests(tmp_path / "manifests", "sd_saliency_900")
    registry = Registry(manifests, Roots(data=fresh))
    policy = LicencePolicy.parse("commercial", LicenceCatalogue.load(manifests))
    options = PrepareOptions(data=fresh, accepted=frozenset({SD_LICENCE}), policy=policy,
                             base_url=server.url, progress=False)
    outcome = prepare_source(registry, registry.catalogue["sd_saliency_900"], options)
    assert outcome.status == SKIPPED and SD_LICENCE in outcome.detail and "'commercial'" in outcome.detail
    assert not fresh.exists() or not (fresh / "sd_saliency_900").exists()

    from dataclasses import replace

    manual = replace(registry.catalogue["sd_saliency_900"], download=None,
                     manual_download="accept the terms at https://example.org/terms")
    outcome = prepare_source(registry, manual, options)
    assert outcome.status == SKIPPED
    assert "https://example.org/terms" in outcome.detail and "DAAD_ROOT_SD_SALIENCY_900" in outcome.detail

    # An origin of URL records (images cached by `daad fetch`) needs no folder.
    manifests = copy_manifests(tmp_path / "online", "daad_online_sources")
    registry = Registry(manifests, Roots(data=fresh))
    outcome = prepare_source(registry, registry.catalogue["daad_online_sources"], options)
    assert outcome.status == PRESENT and "daad fetch" in outcome.detail


# ---- bad archives and bad servers: a small SD-saliency-900 subset keeps them fast ----------------

SUBSET = 12


@pytest.fixture
def small(tmp_path, fresh, server):
    """Scratch manifests with the first SUBSET SD-saliency-900 records, and a way to point them at a URL."""
    manifests = copy_manifests(tmp_path / "manifests", "sd_saliency_900")
    records = list(read_manifest(manifests / "sd_saliency_900.jsonl"))[:SUBSET]
    write_manifest(manifests / "sd_saliency_900.jsonl", records)
    entries = {f"repo-c0ffee/SD-saliency-900/{r.image.path}": (SD_ROOT / r.image.path).read_bytes() for r in records}

    def serve(name: str, body: bytes, fmt: str = "zip") -> Registry:
        server.files[f"/bad/{name}"] = body
        (manifests / "downloads.toml").write_text(
            f'[sd_saliency_900]\nurl = "https://github.com/bad/{name}"\n'
            f'subpath = "repo-c0ffee/SD-saliency-900"\nformat = "{fmt}"\n'
        )
        return Registry(manifests, Roots(data=fresh))

    return serve, entries, records


def _options(data: Path, server: ArchiveServer, **kw) -> PrepareOptions:
    return PrepareOptions(data=data, accepted=frozenset({SD_LICENCE}), base_url=server.url,
                          timeout=kw.pop("timeout", 5), retries=kw.pop("retries", 0), progress=False, **kw)


def _assert_nothing_left(data: Path) -> None:
    assert not (data / "sd_saliency_900").exists()
    leftovers = [p.name for p in (data / ".daad").iterdir() if p.name != "archives"] if (data / ".daad").exists() else []
    assert leftovers == []
    archives = data / ".daad" / "archives"
    assert not archives.exists() or not [p for p in archives.iterdir() if not p.name.endswith(".part")]


def _prepare_error(registry: Registry, options: PrepareOptions) -> SourceDownloadError:
    with pytest.raises(SourceDownloadError) as info:
        prepare_source(registry, registry.catalogue["sd_saliency_900"], options)
    return info.value


def test_small_archive_downloads_and_verifies(small, fresh, server):
    serve, entries, _ = small
    registry = serve("good.zip", _zip(entries))
    report = prepare(registry, ["sd_saliency_900"], _options(fresh, server))
    assert [(o.status, o.files) for o in report.outcomes] == [(DOWNLOADED, SUBSET)]
    assert sorted(p.name for p in (fresh / "sd_saliency_900" / "Source Images").iterdir()) == sorted(
        Path(n).name for n in entries
    )


def test_file_differing_from_manifest_is_refetched_once_then_reported(small, fresh, server):
    serve, entries, records = small
    tampered = dict(entries)
    name = f"repo-c0ffee/SD-saliency-900/{records[3].image.path}"
    tampered[name] = tampered[name][:-1] + bytes([tampered[name][-1] ^ 0xFF])
    registry = serve("tampered.zip", _zip(tampered))
    error = _prepare_error(registry, _options(fresh, server))
    assert records[3].id in str(error) and "sha256_mismatch" in str(error)
    assert "fetching" in str(error) and "again" in str(error)
    assert server.hits["/bad/tampered.zip"] == 2
    _assert_nothing_left(fresh)


def test_truncated_download_and_truncated_archive(small, fresh, server):
    serve, entries, _ = small
    body = _zip(entries)
    registry = serve("cut-off.zip", body)
    server.truncate.add("/bad/cut-off.zip")
    error = _prepare_error(registry, _options(fresh, server))
    # Caught by the download (short body) or, failing that, by reading the archive.
    assert "/bad/cut-off.zip" in str(error)
    assert "network_error" in str(error) or "cannot read archive" in str(error), str(error)
    assert not (fresh / "sd_saliency_900").exists()

    registry = serve("half.zip", body[: len(body) // 2])  # complete transfer of a broken archive
    error = _prepare_error(registry, _options(fresh, server))
    assert "cannot read archive" in str(error)
    assert server.hits["/bad/half.zip"] == 2
    _assert_nothing_left(fresh)


def test_short_body_is_detected_and_resumed(server, tmp_path):
    body = os.urandom(50_000)
    server.ranges.clear()
    server.files["/short.bin"] = body
    server.truncate_once.add("/short.bin")
    result = download(f"{server.url}/short.bin", tmp_path / "short.bin", sha256=hashlib.sha256(body).hexdigest(),
                      max_bytes=1 << 20, backoff=0)
    assert result.ok and result.attempts == 2, result
    assert server.ranges == [f"bytes={len(body) // 2}-"]  # the second attempt resumed the half it had
    assert (tmp_path / "short.bin").read_bytes() == body

    server.truncate.add("/short.bin")  # always cut short: reported, never accepted as complete
    result = download(f"{server.url}/short.bin", tmp_path / "again.bin", max_bytes=1 << 20, retries=1, backoff=0)
    assert not result.ok and result.reason == "network_error" and "connection closed after" in result.detail
    assert not (tmp_path / "again.bin").exists()
    server.truncate.discard("/short.bin")  # the server is shared by the session's tests
    server.ranges.clear()


def test_partial_download_resumes_and_stale_unpack_is_cleared(small, fresh, server):
    serve, entries, _ = small
    body = _zip(entries)
    registry = serve("resume.zip", body)
    part = archive_path(fresh, f"{server.url}/bad/resume.zip", "zip").with_suffix(".zip.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])
    (fresh / ".daad" / "tmp-sd_saliency_900-killed").mkdir()
    outcome = prepare_source(registry, registry.catalogue["sd_saliency_900"], _options(fresh, server))
    assert outcome.status == DOWNLOADED
    assert server.ranges == ["bytes=1000-"]
    assert not (fresh / ".daad" / "tmp-sd_saliency_900-killed").exists()
    server.ranges.clear()


@pytest.mark.parametrize("case", ["dotdot-zip", "dotdot-tar", "symlink-zip", "symlink-tar", "hardlink-tar"])
def test_archive_escaping_its_target_is_refused(small, fresh, server, tmp_path, case):
    serve, entries, _ = small
    prefix = "repo-c0ffee/SD-saliency-900"
    if case == "dotdot-zip":
        registry = serve("dotdot.zip", _zip(entries | {f"{prefix}/../../../../escaped.txt": b"x"}))
    elif case == "symlink-zip":
        registry = serve("link.zip", _zip(entries, links={f"{prefix}/Source Images/out": "../../../../.."}))
    else:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            bad = tarfile.TarInfo(f"{prefix}/../../escaped.txt" if case == "dotdot-tar" else f"{prefix}/out")
            if case == "symlink-tar":
                bad.type, bad.linkname = tarfile.SYMTYPE, "/etc"
            elif case == "hardlink-tar":
                bad.type, bad.linkname = tarfile.LNKTYPE, "etc/passwd"
            else:
                bad.size = 1
            tf.addfile(bad, io.BytesIO(b"x") if case == "dotdot-tar" else None)
        registry = serve(f"{case}.tar.gz", buffer.getvalue(), fmt="tar")
    error = _prepare_error(registry, _options(fresh, server))
    assert any(word in str(error) for word in ("climbs out", "points outside", "outside")), str(error)
    _assert_nothing_left(fresh)
    assert not list(tmp_path.parent.rglob("escaped.txt"))


def test_symlink_chain_cannot_lead_writes_out(tmp_path):
    """A link to '..' inside a folder reached through another link is caught when resolved."""
    archive = tmp_path / "chain.zip"
    archive.write_bytes(_zip({"r/a/x": b"1", "r/a/l/m/evil": b"x"}, links={"r/a/l": "..", "r/a/l/m": ".."}))
    with pytest.raises(UnsafeArchiveError):
        unpack(archive, tmp_path / "out" / "target", format="zip", subpath="r", max_bytes=1 << 20)
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()


def test_size_cap(small, fresh, server):
    serve, entries, _ = small
    registry = serve("big.zip", _zip(entries))
    error = _prepare_error(registry, _options(fresh, server, max_unpacked_bytes=1000))
    assert "above the cap of 1000" in str(error)
    _assert_nothing_left(fresh)


def test_404_and_stalled_server(small, fresh, server):
    serve, _, _ = small
    registry = serve("missing.zip", b"")
    del server.files["/bad/missing.zip"]
    error = _prepare_error(registry, _options(fresh, server))
    assert "dead_link" in str(error) and "404" in str(error)
    _assert_nothing_left(fresh)

    registry = serve("stall.zip", b"never sent")
    server.stall.add("/bad/stall.zip")
    start = time.monotonic()
    error = _prepare_error(registry, _options(fresh, server, timeout=1, retries=1))
    assert time.monotonic() - start < 15
    assert "timeout" in str(error)
    _assert_nothing_left(fresh)


def test_licence_acceptance_from_env_and_config(fresh, tmp_path, monkeypatch):
    from daad.sources.archive_sources import accepted_licences, needs_acceptance

    from dataclasses import replace

    entry = Catalogue.load(REPO / "manifests")["sd_saliency_900"]
    for licence, commercial, needed in [
        ("CC-BY-NC-SA-4.0", None, True), ("unknown", True, True), (SD_LICENCE, True, True),
        ("CC-BY-4.0", None, True), ("CC-BY-4.0", False, True), ("CC-BY-4.0", True, False), ("MIT", True, False),
    ]:
        assert needs_acceptance(replace(entry, licence=licence, commercial_use=commercial)) is needed, licence
    config = tmp_path / "config" / "daad" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('accept_licences = ["CC-BY-NC-SA-4.0"]\n')
    monkeypatch.setenv("DAAD_ACCEPT_LICENCES", f"{CF_LICENCE}, {SD_LICENCE}")
    assert accepted_licences(["MIT"]) == {"MIT", "CC-BY-NC-SA-4.0", CF_LICENCE, SD_LICENCE}


def _serve_with(serve, name: str, body: bytes, extra: str, fmt: str = "zip") -> Registry:
    """``serve`` with more lines in the source's downloads.toml table (limits, keep)."""
    registry = serve(name, body, fmt)
    toml = registry.manifests_dir / "downloads.toml"
    toml.write_text(toml.read_text() + extra)
    return Registry(registry.manifests_dir, registry.roots)


def test_a_zip_bomb_is_refused_by_its_expansion_ratio(small, fresh, server):
    serve, entries, _ = small
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        zf.writestr("repo-c0ffee/SD-saliency-900/Ground truth/junk.png", b"\0" * (64 << 20))  # 64 MiB in ~64 kB
    registry = _serve_with(serve, "bomb.zip", buffer.getvalue(), 'keep = ["Ground truth/*"]\n')  # one the loader reads
    error = _prepare_error(registry, _options(fresh, server))
    assert "above 50 times the archive's" in str(error) and str(error).startswith("sd_saliency_900: ")
    _assert_nothing_left(fresh)
    assert not list(fresh.rglob("junk.png"))


def test_member_count_and_per_source_size_come_from_the_catalogue(small, fresh, server):
    serve, entries, _ = small
    flood = dict(entries) | {f"repo-c0ffee/SD-saliency-900/x/{i}": b"" for i in range(200)}
    registry = _serve_with(serve, "flood.zip", _zip(flood), "max_members = 100\n")
    error = _prepare_error(registry, _options(fresh, server))
    assert "more than 100 members" in str(error)
    _assert_nothing_left(fresh)

    registry = _serve_with(serve, "capped.zip", _zip(entries), "max_unpacked_bytes = 5000\n")
    error = _prepare_error(registry, _options(fresh, server))
    assert "above the cap of 5000" in str(error)
    _assert_nothing_left(fresh)


def test_only_what_the_manifests_name_and_keep_is_unpacked(small, fresh, server):
    serve, entries, records = small
    junk = {
        "repo-c0ffee/SD-saliency-900/Source Images/junk.bin": os.urandom(1000),
        "repo-c0ffee/SD-saliency-900/video/big.mp4": os.urandom(1000),
        "repo-c0ffee/SD-saliency-900/Ground truth/In_1.png": b"a mask the loader reads",
    }
    registry = _serve_with(serve, "junk.zip", _zip(entries | junk), 'keep = ["Ground truth/*"]\n')
    outcome = prepare_source(registry, registry.catalogue["sd_saliency_900"], _options(fresh, server))
    assert outcome.status == DOWNLOADED
    root = fresh / "sd_saliency_900"
    unpacked = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert unpacked == sorted([r.image.path for r in records] + ["Ground truth/In_1.png"])
    assert not (root / "video").exists()
