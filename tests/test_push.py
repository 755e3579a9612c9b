"""``daad push`` against a real HTTP stand-in for the Hub on 127.0.0.1 (tests/helpers/hub_server.py):
what arrives is byte for byte the build, refused licences send nothing, a dry run sends nothing,
``--private`` reaches the server, a failed commit names what went, a silent server hits the deadline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SOURCE_ROOTS, copy_manifests
from daad.dataset.build import build
from daad.dataset.push import LicenceRefusedError, PushError, plan_push, push
from daad.licences import LicenceCatalogue, LicencePolicy
from daad.registry.manifest import read_manifest, write_manifest
from daad.registry.registry import Registry
from daad.registry.roots import Roots
from helpers.hub_server import HubServer

SD_ROWS = 10


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Manifests (all of KolektorSDD, CC-BY-NC-SA-4.0; 10 SD-saliency-900 records, no licence to
    republish), a build of both, and a build of what may be republished."""
    base = tmp_path_factory.mktemp("push")
    manifests = copy_manifests(base / "manifests", "kolektorsdd", "sd_saliency_900")
    sd = manifests / "sd_saliency_900.jsonl"
    write_manifest(sd, list(read_manifest(sd))[:SD_ROWS])
    registry = Registry(manifests, Roots(SOURCE_ROOTS))
    build(registry, base / "mixed", progress=False, workers=1)
    policy = LicencePolicy.parse("redistributable", LicenceCatalogue.load(manifests))
    build(registry, base / "clean", progress=False, workers=1, licence_policy=policy)
    return manifests, base / "mixed", base / "clean"


@pytest.fixture
def hub(monkeypatch):
    """The stand-in, and huggingface_hub pointed at it (LFS uploads, online, the stand-in's token)."""
    from huggingface_hub import constants

    server = HubServer()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", server.token)
    yield server
    server.close()


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _plan(builds, which: int):
    manifests = builds[0]
    return plan_push(builds[which], LicenceCatalogue.load(manifests))


def test_cli_push_forced_private_sends_the_build_byte_for_byte(builds, tmp_path):
    manifests, mixed, _ = builds
    server = HubServer()
    try:
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {
            "PYTHONPATH": str(REPO), "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path),
            "COLUMNS": "500"}
        args = [sys.executable, "-m", "daad", "push", "tester/daad", str(mixed), "--manifests", str(manifests),
                "--token", server.token, "--private"]
        refused = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 3  # a data error: rows the licence policy refuses
        assert f"{SD_ROWS} rows from 1 origin(s)" in refused.stderr and "sd_saliency_900" in refused.stderr
        assert server.requests == [] and not server.repos
        done = subprocess.run([*args, "--force"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"pushed {len(_tree(mixed))} file(s)" in done.stdout and f"forced: {SD_ROWS} rows" in done.stdout
    finally:
        server.close()
    repo = server.repos["tester/daad"]
    assert repo.private
    assert repo.files == _tree(mixed)
    assert repo.commits[-1] == ["README.md", "build.json", "images/samples.png"]  # the card lands once every shard is there
    assert ("POST", "/datasets/tester/daad.git/info/lfs/objects/batch") in server.requests


def test_a_build_of_redistributable_licences_goes_without_force_and_public(builds, hub):
    plan = _plan(builds, 2)
    assert not plan.blocked and set(plan.rows) == {"CC-BY-NC-SA-4.0"}
    result = push(plan, "tester/clean")
    repo = hub.repos["tester/clean"]
    assert not repo.private
    assert repo.files == _tree(builds[2])
    assert [f.path for f in result.committed] == [p for group in repo.commits for p in group]
    push(plan, "tester/clean", private=True)  # again, into the repo that exists: made private, same files
    assert repo.private and repo.files == _tree(builds[2]) and len(repo.commits) == 2 * len(result.commit_urls)


def test_refusal_names_count_and_origins_and_sends_nothing(builds, hub):
    plan = _plan(builds, 1)
    assert plan.blocked == {"LicenseRef-SD-saliency-900-research": {"sd_saliency_900": SD_ROWS}}
    with pytest.raises(LicenceRefusedError, match=rf"{SD_ROWS} rows from 1 origin\(s\).*sd_saliency_900"):
        push(plan, "tester/daad")
    assert hub.requests == [] and not hub.repos


def test_unknown_licence_is_refused(builds, tmp_path):
    manifests, mixed, _ = builds
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = shutil.copytree(mixed, tmp_path / "b")
    shard = folder / "data/sd_saliency_900/impurity.parquet"
    table = pq.read_table(shard)
    table = table.set_column(table.schema.get_field_index("licence"), "licence", pa.array(["unknown"] * table.num_rows))
    pq.write_table(table, shard)
    plan = plan_push(folder, LicenceCatalogue.load(manifests))
    assert plan.blocked == {"unknown": {"sd_saliency_900": SD_ROWS}}


def test_dry_run_lists_files_sizes_licences_and_sends_nothing(builds, hub, tmp_path):
    from typer.testing import CliRunner

    from daad.cli import app

    manifests, mixed, _ = builds
    result = CliRunner().invoke(
        app, ["push", "tester/daad", str(mixed), "--manifests", str(manifests), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for path in _tree(mixed):
        assert path in result.output
    assert "CC-BY-NC-SA-4.0" in result.output and "refused" in result.output
    assert "sd_saliency_900 (LicenseRef-SD-saliency-900-research) 10" in result.output
    assert hub.requests == []
    bad = CliRunner().invoke(app, ["push", "not a repo//id", str(mixed), "--manifests", str(manifests), "--dry-run"])
    assert bad.exit_code == 2 and "REPO_ID" in bad.output


def test_a_failed_commit_says_what_went_and_what_did_not(builds, hub):
    hub.fail_commit = 1
    with pytest.raises(PushError) as err:
        push(_plan(builds, 1), "tester/daad", force=True)
    message = str(err.value)
    assert "1 file(s)" in message and "committed" in message
    assert f"not uploaded: {len(_tree(builds[1])) - 1} file(s)" in message and "data/sd_saliency_900/impurity.parquet" in message
    assert set(hub.repos["tester/daad"].files) == {"data/kolektorsdd/crack.parquet"}


def test_a_silent_server_hits_the_deadline(builds, hub):
    hub.stall.add("/api/repos/create")
    start = time.monotonic()
    with pytest.raises(PushError, match="nothing committed"):
        push(_plan(builds, 2), "tester/daad", timeout=1)
    assert time.monotonic() - start < 30


def test_no_token_is_refused_before_any_request(builds, hub, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "none"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "none"))
    with pytest.raises(PushError, match="no Hugging Face token"):
        push(_plan(builds, 2), "tester/daad")
    assert hub.requests == []


def test_a_folder_that_is_not_a_build_is_refused(builds, tmp_path):
    with pytest.raises(PushError, match="not a built dataset"):
        plan_push(tmp_path, LicenceCatalogue.load(builds[0]))
