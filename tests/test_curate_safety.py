"""Curation never drops a decision: open/sync keep unsynced edits, a sync killed between
manifest and journal is finished by the next one, a killed command's mongod is stopped by
the next, and decisions survive a mistyped ingest and a remove/re-add cycle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from conftest import REPO, SD_ROOT, SOURCE_ROOTS, copy_manifests
from daad.cli.app import app as cli
from daad.curate.dataset import UnsyncedEditsError, open_records
from daad.curate.session import STATE_FILE
from daad.curate.sync import sync
from daad.curate.journal import read_log
from daad.registry.manifest import read_manifest, write_manifest
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.taxonomy import Status
from helpers.curation import shared_session, subset_manifests

CF_ROOT = SOURCE_ROOTS["crackforest"]


@pytest.fixture(scope="module")
def session():
    return shared_session()


def _cli(session, *args: str):
    return CliRunner().invoke(cli, [*args, "--database-dir", str(session.database_dir)])


def _tag(session, name: str, record_id: str, *tags: str, label: str | None = None) -> None:
    fo = session.fiftyone()
    sample = fo.load_dataset(name).one(fo.ViewField("record_id") == record_id)
    sample.tags += list(tags)
    if label is not None:
        sample["anomaly_class"].label = label
    sample.save()


def test_decisions_survive_filters_mistyped_ingest_and_re_add(session, tmp_path):
    manifests = copy_manifests(tmp_path / "manifests", "crackforest")
    shutil.copy(subset_manifests(tmp_path / "sd") / "sd_saliency_900.jsonl", manifests)
    m = ["--manifests", str(manifests), "--root", f"crackforest={CF_ROOT}", "--root", f"sd_saliency_900={SD_ROOT}"]
    name = "safety-decisions"
    opened = _cli(session, "curate", "open", "--no-app", "--name", name, "--origin", "crackforest", *m)
    assert opened.exit_code == 0 and "118 samples" in opened.output, opened.output
    _tag(session, name, "crackforest/001", "reject", "reason:blurry")
    _tag(session, name, "crackforest/002", label="scratch")

    # Another filter would drop the two edited samples: refused, naming them; nothing changes.
    other = _cli(session, "curate", "open", "--no-app", "--name", name, "--origin", "sd_saliency_900", *m)
    assert isinstance(other.exception, UnsyncedEditsError), other.output
    assert "crackforest/001 (status)" in str(other.exception) and "crackforest/002 (anomaly_class)" in str(other.exception)
    assert "--discard-unsynced" in str(other.exception) and "daad curate sync" in str(other.exception)
    assert len(session.fiftyone().load_dataset(name)) == 118

    synced = _cli(session, "curate", "sync", "--name", name, "--manifests", str(manifests), "--who", "tester")
    assert synced.exit_code == 0 and "applied 2 change(s)" in synced.output, synced.output
    manifest = manifests / "crackforest.jsonl"
    after_sync = manifest.read_bytes()
    entries = read_log(manifests)
    assert [e["after"] for e in entries] == [{"status": {"status": "rejected", "reason": "blurry"}},
                                             {"anomaly_class": "scratch"}]
    switched = _cli(session, "curate", "open", "--no-app", "--name", name, "--origin", "sd_saliency_900", *m)
    assert switched.exit_code == 0 and "30 samples (added 30, refreshed 0, kept 0, removed 118)" in switched.output

    # A mistyped ingest is refused; a real removal and re-add brings the decisions back.
    ingest = ["ingest", "crackforest", "--manifests", str(manifests)]
    typo = CliRunner().invoke(cli, [*ingest, "--root", f"crackforest={tmp_path / 'crackforrest'}"])
    assert typo.exception is not None and manifest.read_bytes() == after_sync
    partial = tmp_path / "cf"
    shutil.copytree(CF_ROOT, partial, ignore=lambda d, names: [n for n in names if Path(n).stem in ("001", "002")])
    assert CliRunner().invoke(cli, [*ingest, "--root", f"crackforest={partial}", "--allow-remove"]).exit_code == 0
    assert len(list(read_manifest(manifest))) == 116
    assert CliRunner().invoke(cli, [*ingest, "--root", f"crackforest={CF_ROOT}"]).exit_code == 0
    assert manifest.read_bytes() == after_sync
    back = {r.id: r for r in read_manifest(manifest)}
    assert (back["crackforest/001"].status, back["crackforest/001"].reason) == (Status.REJECTED, "blurry")
    assert back["crackforest/002"].anomaly_class == "scratch"

    # --discard-unsynced is the explicit way to drop an edit.
    sd_id = sorted(r.id for r in read_manifest(manifests / "sd_saliency_900.jsonl"))[0]
    _tag(session, name, sd_id, "needs_review")
    dropped = _cli(session, "curate", "open", "--no-app", "--name", name, "--origin", "crackforest", "--discard-unsynced", *m)
    assert dropped.exit_code == 0 and "removed 30" in dropped.output, dropped.output


def _open_first(session, tmp_path, name: str, count: int) -> tuple[Registry, list]:
    """A registry on the SD-saliency subset, with its first ``count`` records opened as ``name``."""
    registry = Registry(subset_manifests(tmp_path / "manifests"), Roots({"sd_saliency_900": SD_ROOT}))
    records = sorted(registry.records(), key=lambda r: r.id)[:count]
    open_records(session, registry, records, name, masks_dir=tmp_path / "masks")
    return registry, records


def test_conflicting_edits_are_kept_until_discarded(session, tmp_path):
    name = "safety-conflict"
    registry, records = _open_first(session, tmp_path, name, 3)
    _tag(session, name, records[1].id, "reject", "reason:wrong_mask")
    manifest = registry.manifests_dir / "sd_saliency_900.jsonl"
    write_manifest(manifest, [r if r.id != records[1].id else type(r).from_json(r.to_json() | {"note": "upstream"})
                              for r in read_manifest(manifest)])
    before = manifest.read_bytes()

    kept = _cli(session, "curate", "sync", "--name", name)
    assert kept.exit_code == 1 and "CONFLICT" in kept.output and "--discard-unsynced" in kept.output
    # Re-opening would refresh the changed record: refused, the edit is still there.
    with pytest.raises(UnsyncedEditsError, match=records[1].id):
        open_records(session, registry, registry.records(), name, masks_dir=tmp_path / "masks")
    assert "reject" in session.fiftyone().load_dataset(name).one(
        session.fiftyone().ViewField("record_id") == records[1].id).tags
    discarded = _cli(session, "curate", "sync", "--name", name, "--discard-unsynced", "--json")
    assert discarded.exit_code == 0 and json.loads(discarded.output)["discarded"] == [records[1].id]
    assert manifest.read_bytes() == before
    _, summary = open_records(session, registry, records, name, masks_dir=tmp_path / "masks")
    assert summary.added == 1 and summary.samples == 3


def test_sync_killed_between_manifest_and_journal_is_finished_not_conflicted(session, tmp_path):
    name = "safety-killed"
    registry, records = _open_first(session, tmp_path, name, 4)
    _tag(session, name, records[0].id, "reject", "reason:blurry")
    _tag(session, name, records[2].id, label="crack")
    planned = sync(session, name, dry_run=True)
    assert len(planned.changes) == 2
    # What a sync killed right after its manifest write leaves: the manifest changed, the
    # samples still pinned to the old lines (and, with the old order, no journal entry).
    manifest = registry.manifests_dir / "sd_saliency_900.jsonl"
    new = {c.record_id: c.after for c in planned.changes}
    write_manifest(manifest, [new.get(r.id, r) for r in read_manifest(manifest)])
    written = manifest.read_bytes()

    result = _cli(session, "curate", "sync", "--name", name, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["conflicts"] == [] and sorted(report["recovered"]) == sorted(new)
    assert manifest.read_bytes() == written
    assert sorted(e["id"] for e in read_log(registry.manifests_dir)) == sorted(new)
    again = json.loads(_cli(session, "curate", "sync", "--name", name, "--json").output)
    assert again["changes"] == again["recovered"] == again["conflicts"] == [] and again["unchanged"] == 4
    assert len(read_log(registry.manifests_dir)) == 2


def test_a_killed_commands_mongod_is_stopped_by_the_next(tmp_path):
    database = tmp_path / "fiftyone"
    env = {**os.environ, "DAAD_FIFTYONE_DIR": str(database)}
    command = [sys.executable, "-m", "daad", "curate", "sync", "--name", "nothing-here", "--manifests", str(tmp_path)]
    killed = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (database / STATE_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    state = json.loads((database / STATE_FILE).read_text())
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    orphan = psutil.Process(state["pid"])
    assert orphan.is_running() and state["owner"] == killed.pid

    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and "no FiftyOne dataset 'nothing-here'" in result.stderr, result.stderr
    orphan.wait(timeout=15)  # raises TimeoutExpired if the next command left it running
    assert not orphan.is_running() and not (database / STATE_FILE).exists()


def test_two_named_collections_curated_side_by_side(session, tmp_path):
    from helpers.collections import real_collection

    manifests = copy_manifests(tmp_path / "manifests")
    roots = {"steel_a": real_collection(tmp_path / "a", ["In_1", "Sc_1"]),
             "steel_b": real_collection(tmp_path / "b", ["Pa_2", "Sc_2"])}
    for origin, root in roots.items():
        result = CliRunner().invoke(cli, ["ingest", origin, "--loader", "folder", "--root", f"{origin}={root}",
                                          "--manifests", str(manifests)])
        assert result.exit_code == 0, result.output
    m = ["--manifests", str(manifests), *[f"--root={o}={r}" for o, r in roots.items()]]
    name = "safety-collections"
    opened = _cli(session, "curate", "open", "--no-app", "--name", name, "--origin", "steel_a", "--origin", "steel_b", *m)
    assert opened.exit_code == 0 and "4 samples" in opened.output, opened.output
    _tag(session, name, "steel_a/photos/Sc_1", "reject", "reason:blurry")
    _tag(session, name, "steel_b/photos/Pa_2", label="pits")
    untouched = {o: {r.id: r for r in read_manifest(manifests / f"{o}.jsonl")} for o in roots}
    synced = _cli(session, "curate", "sync", "--name", name, "--manifests", str(manifests))
    assert synced.exit_code == 0 and "applied 2 change(s)" in synced.output, synced.output
    a = {r.id: r for r in read_manifest(manifests / "steel_a.jsonl")}
    b = {r.id: r for r in read_manifest(manifests / "steel_b.jsonl")}
    assert a["steel_a/photos/Sc_1"].status is Status.REJECTED and a["steel_a/photos/In_1"] == untouched["steel_a"]["steel_a/photos/In_1"]
    assert b["steel_b/photos/Pa_2"].anomaly_class == "pits" and b["steel_b/photos/Sc_2"] == untouched["steel_b"]["steel_b/photos/Sc_2"]


FRESH_PROCESS = """
import logging, sys
from daad.curate.session import CurationSession

session = CurationSession(sys.argv[1])
try:
    fo = session.fiftyone()
    fo.Dataset("chatter")  # FiftyOne logs at INFO while it works, e.g. "Uploading media to Label Studio..."
    logging.getLogger("fiftyone.utils.annotations").info("an info line of FiftyOne")
    logging.getLogger("fiftyone.utils.annotations").warning("a warning of FiftyOne")
finally:
    session.close()
"""


def test_fiftyone_never_writes_on_stdout(tmp_path):
    """stdout carries `--json` documents: in a fresh process FiftyOne's log lines stay off it, warnings on stderr."""
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "db")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""
    assert "a warning of FiftyOne" in done.stderr and "an info line" not in done.stderr
