"""Mask annotation through FiftyOne's CVAT backend, against a stand-in for a remote CVAT server
(``helpers.cvat_server``: CVAT needs Docker, PostgreSQL and Redis, and app.cvat.ai is out of
reach here): real inline images of the DAAD source list that need masks, and real
SD-saliency-900 masks to fix, are sent one task per class; shapes saved as CVAT's editor saves
them come back through ``--load`` as RLE through the curation sync; a record whose manifest
changed is a conflict; a server that does not answer fails by its deadline, changing nothing."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SD_ROOT, SHARED_DATA
from daad.cli.app import app as cli
from daad.curate import cvat
from daad.curate.annotate import CVAT_INFO, load, send
from daad.curate.journal import read_log
from daad.masks import RLE
from daad.registry.manifest import read_manifest, write_manifest
from daad.taxonomy import Status
from helpers.curation import annotation_registry, shared_session
from helpers.cvat_server import CVATServer
from helpers.loopback import LoopbackServer

NAME = "annotate-cvat"
ONLINE = SHARED_DATA / "daad-online-sources"
ROOTS = {"sd_saliency_900": SD_ROOT, "daad_online_sources": ONLINE}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The CVAT stand-in + a registry of 5 real needs_mask records and 2 real SD-saliency-900 records."""
    with pytest.MonkeyPatch.context() as mp:
        registry, need, sd = annotation_registry(tmp_path_factory, "annotate-cvat", mp)
        stand = CVATServer()
        try:
            yield shared_session(), registry, stand, need, sd
        finally:
            stand.close()


class _Silent(BaseHTTPRequestHandler):
    """Takes a request and never answers it (until the test has long given up)."""

    def handle(self) -> None:
        time.sleep(5)


def _frames(session, name: str) -> dict[str, tuple[int, int]]:
    """record id -> (CVAT task, image index) of what ``send`` sent."""
    info = session.fiftyone().load_dataset(name).info[CVAT_INFO]
    return {v["record_id"]: (v["task"], v["frame"]) for v in info.values()}


def _shape_mask(shape: dict, height: int, width: int) -> np.ndarray:
    """A ``mask`` shape's pixels, decoded from CVAT's run-length points."""
    *runs, left, top, right, bottom = (int(v) for v in shape["points"])
    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[top:bottom + 1, left:right + 1] = flat.reshape(bottom - top + 1, right - left + 1)
    return mask


def test_round_trip_through_cvat(world):
    session, registry, stand, need, sd = world
    server = cvat.connect(stand.url, stand.username, stand.password)
    records = need[:4] + sd
    summary = send(session, registry, records, server, NAME)
    assert summary.opened.skipped == [] and summary.opened.samples == 6
    frames = _frames(session, NAME)
    assert sorted(frames) == sorted(r.id for r in records)
    # one CVAT task per anomaly class, labelled with that class, holding that class's images, byte for byte
    by_class = {p.anomaly_class: p for p in summary.projects}
    assert sorted(by_class) == sorted({r.anomaly_class for r in records})
    assert sorted(stand.tasks) == sorted(p.project_id for p in summary.projects)
    for record in records:
        task_id, frame = frames[record.id]
        task = stand.tasks[task_id]
        assert by_class[record.anomaly_class].project_id == task_id
        assert [label["name"] for label in task.labels] == [record.anomaly_class]
        assert task.frames[frame]["data"] == registry.image_path(record).read_bytes()
        assert (task.frames[frame]["width"], task.frames[frame]["height"]) == (record.width, record.height)
    # a record that has a mask carries it as a CVAT mask shape to edit; the others carry none
    for record in records:
        task_id, frame = frames[record.id]
        shapes = [s for s in stand.tasks[task_id].annotations["shapes"] if s["frame"] == frame]
        if record in sd:
            (shape,) = shapes
            assert shape["type"] == "mask"
            np.testing.assert_array_equal(_shape_mask(shape, record.height, record.width),
                                          record.mask.decode() != 0)
        else:
            assert shapes == []
    assert sum(p.proposals for p in summary.projects) == 2
    runs = session.fiftyone().load_dataset(NAME).list_annotation_runs()
    assert len(runs) == len(by_class)  # the login is not stored with the runs
    for key in runs:
        assert stand.password not in json.dumps(session.fiftyone().load_dataset(NAME).get_annotation_info(key).serialize(), default=str)

    # the annotators: a mask drawn with the brush, a polygon, a corner added to SD's mask
    expected = {}
    a, b, d = need[0], need[1], need[3]
    ellipse = np.zeros((a.height, a.width), np.uint8)
    cv2.ellipse(ellipse, (a.width // 2, a.height // 2), (a.width // 5, a.height // 6), 30, 0, 360, 1, -1)
    stand.draw_mask(*frames[a.id], ellipse, a.anomaly_class)
    expected[a.id] = ellipse
    corners = np.array([[10, 12], [b.width - 20, 15], [b.width // 2, b.height - 9]])
    stand.draw_polygon(*frames[b.id], corners, b.anomaly_class)
    corner = np.zeros((sd[0].height, sd[0].width), np.uint8)
    corner[:40, :40] = 1
    stand.draw_mask(*frames[sd[0].id], corner, sd[0].anomaly_class)  # beside the pre-filled mask
    expected[sd[0].id] = (sd[0].mask.decode() != 0) | corner
    # d is drawn on, but its manifest record changes after it was sent: a conflict
    square = np.zeros((d.height, d.width), np.uint8)
    square[:8, :8] = 1
    stand.draw_mask(*frames[d.id], square, d.anomaly_class)
    online = registry.manifests_dir / "daad_online_sources.jsonl"
    rejected = dict(status=Status.REJECTED, reason="not an anomaly", curated=("status",))
    write_manifest(online, [replace(r, **rejected) if r.id == d.id else r for r in read_manifest(online)])

    report = load(session, server, NAME, who="tester")
    assert sorted(report.loaded) == sorted([a.id, b.id, sd[0].id, d.id])
    assert report.waiting == 2 and report.empty == []  # need[2] (nothing saved), sd[1] (its mask untouched)
    assert [c.record_id for c in report.all_conflicts()] == [d.id]
    assert sorted(c.record_id for c in report.sync.changes) == sorted([a.id, b.id, sd[0].id])
    manifest = {r.id: r for r in read_manifest(online)} | {
        r.id: r for r in read_manifest(registry.manifests_dir / "sd_saliency_900.jsonl")}
    for record_id, mask in expected.items():  # mask shapes: the drawn pixels, exactly
        assert manifest[record_id].mask.counts == RLE.encode(mask).counts
        assert manifest[record_id].area == int(mask.sum()) and "mask" in manifest[record_id].curated
    # the polygon, rasterised by FiftyOne: the drawn triangle, differing at most on its outline
    triangle = cv2.fillPoly(np.zeros((b.height, b.width), np.uint8), [corners.astype(np.int32)], 1)
    outline = cv2.polylines(np.zeros_like(triangle), [corners.astype(np.int32)], True, 1, thickness=3)
    loaded = manifest[b.id].mask.decode() != 0
    assert not ((loaded != (triangle != 0)) & (outline == 0)).any()
    assert abs(int(loaded.sum()) - int(triangle.sum())) < outline.sum() // 2
    for record in (a, b):
        assert manifest[record.id].status == Status.NEEDS_REVIEW
    assert manifest[sd[0].id].status == Status.ACCEPTED
    assert manifest[d.id].mask is None and manifest[d.id].status == Status.REJECTED  # not applied
    log = {e["id"]: e for e in read_log(registry.manifests_dir)}
    assert sorted(log) == sorted([a.id, b.id, sd[0].id]) and log[a.id]["who"] == "tester"

    # a second load changes nothing; the conflict is reported again, still not applied
    again = load(session, server, NAME, who="tester")
    assert again.sync.changes == [] and again.loaded == []
    assert [c.record_id for c in again.all_conflicts()] == [d.id]
    assert len(read_log(registry.manifests_dir)) == len(log)

    # a shape saved after its record changed in the manifest: a conflict, not applied
    write_manifest(online, [replace(r, note="edited elsewhere") if r.id == a.id else r for r in read_manifest(online)])
    more = ellipse.copy()
    more[: a.height // 3] = 1
    stand.draw_mask(*frames[a.id], more, a.anomaly_class)
    edited = load(session, server, NAME, who="tester")
    assert sorted(c.record_id for c in edited.all_conflicts()) == sorted([a.id, d.id])
    after = {r.id: r for r in read_manifest(online)}[a.id]
    assert after.mask.counts == RLE.encode(ellipse).counts and after.note == "edited elsewhere"


def _cli_args(session, registry, name):
    return ["--name", name, "--database-dir", str(session.database_dir), "--manifests", str(registry.manifests_dir),
            *(f for k, v in ROOTS.items() for f in ("--root", f"{k}={v}"))]


def test_cli_sends_to_cvat_and_loads(world, monkeypatch):
    """``daad curate annotate --backend cvat``: login from the environment, JSON out; --load with
    nothing drawn applies nothing and reports the image as waiting."""
    session, registry, stand, need, _ = world
    monkeypatch.setenv("DAAD_CVAT_USERNAME", stand.username)
    monkeypatch.setenv("DAAD_CVAT_PASSWORD", stand.password)
    record = need[4]
    before = set(stand.tasks)
    args = ["curate", "annotate", "--backend", "cvat", "--cvat-url", stand.url, *_cli_args(session, registry, "cvat-cli")]
    session.fiftyone()  # imported here, FiftyOne logs to pytest's stdout, not into the command's JSON output
    result = CliRunner().invoke(cli, [*args, "--id", record.id, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["samples"] == 1 and [p["tasks"] for p in out["projects"]] == [1]
    (task_id,) = set(stand.tasks) - before
    assert out["projects"][0]["url"] == f"{stand.url}/tasks/{task_id}"
    assert stand.tasks[task_id].frames[0]["data"] == registry.image_path(record).read_bytes()
    assert stand.password not in result.stdout
    result = CliRunner().invoke(cli, [*args, "--load", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["waiting"] == 1 and out["sync"]["changes"] == [] and out["loaded"] == []


def test_an_unreachable_or_refusing_cvat_fails_by_its_deadline_changing_nothing(world, tmp_path, monkeypatch):
    session, registry, stand, need, _ = world
    manifests = {p.name: p.read_bytes() for p in registry.manifests()}
    tasks = dict(stand.tasks)
    closed = LoopbackServer(_Silent)
    dead_url = closed.url
    closed.close()  # nothing listens there any more
    monkeypatch.setenv("DAAD_CVAT_USERNAME", stand.username)
    monkeypatch.setenv("DAAD_CVAT_PASSWORD", stand.password)
    name = "cvat-unreachable"
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["curate", "annotate", "--backend", "cvat", "--cvat-url", dead_url,
                                      "--id", need[0].id, *_cli_args(session, registry, name)])
    assert isinstance(result.exception, cvat.CVATError), result.output
    assert "does not answer" in str(result.exception) and dead_url in str(result.exception)
    assert time.monotonic() - started < cvat.CONNECT_TIMEOUT_S
    # a server that accepts the connection and never answers: refused at the deadline
    silent = LoopbackServer(_Silent)
    try:
        started = time.monotonic()
        with pytest.raises(cvat.CVATError, match="does not answer within 1s"):
            cvat.connect(silent.url, stand.username, stand.password, timeout=1)
        assert time.monotonic() - started < 5
    finally:
        silent.close()
    with pytest.raises(cvat.CVATError, match="refuses the login of 'annotator'"):
        cvat.connect(stand.url, stand.username, "not-the-password")
    assert not session.fiftyone().dataset_exists(name)
    assert {p.name: p.read_bytes() for p in registry.manifests()} == manifests and stand.tasks == tasks


def test_a_task_whose_jobs_never_appear_fails_at_the_jobs_deadline(world, monkeypatch):
    """FiftyOne's backend polls for a new task's jobs without end; daad's stops at its deadline."""
    from daad.curate import cvat_backend

    session, registry, stand, need, _ = world
    monkeypatch.setattr(cvat_backend, "JOBS_TIMEOUT_S", 1.0)
    monkeypatch.setattr(stand, "make_jobs", False)
    server = cvat.connect(stand.url, stand.username, stand.password)
    started = time.monotonic()
    with pytest.raises(cvat.CVATError, match=r"task \d+ has no job 1s after its images were uploaded.*stay unsent"):
        send(session, registry, [need[0]], server, "cvat-no-jobs")
    assert time.monotonic() - started < 30
    dataset = session.fiftyone().load_dataset("cvat-no-jobs")
    assert dataset.info.get(CVAT_INFO, {}) == {} and dataset.list_annotation_runs() == []  # nothing recorded as sent
    monkeypatch.setattr(stand, "make_jobs", True)
    again = send(session, registry, [need[0]], server, "cvat-no-jobs")  # the next send sends it
    assert again.pending == 0 and [p.tasks for p in again.projects] == [1]
    assert load(session, server, "cvat-no-jobs").waiting == 1


def test_options_of_the_other_backend_are_usage_errors(world, tmp_path, monkeypatch):
    session, registry, stand, need, _ = world
    monkeypatch.setenv("DAAD_CVAT_USERNAME", stand.username)
    monkeypatch.setenv("DAAD_CVAT_PASSWORD", stand.password)
    base = ["curate", "annotate", "--id", need[0].id, *_cli_args(session, registry, "cvat-refused")]
    cvat_args = ["--backend", "cvat", "--cvat-url", stand.url]
    tasks = dict(stand.tasks)
    for options, match in [
        (["--backend", "cvat"], "--cvat-url"),
        ([*cvat_args, "--label-studio-url", "http://127.0.0.1:9"], "--label-studio-url with --backend cvat"),
        ([*cvat_args, "--sam-model", str(tmp_path)], "--sam-model with --backend cvat"),
        ([*cvat_args, "--port", "8080"], "--port with --backend cvat"),
        ([*cvat_args, "--no-serve"], "--serve/--no-serve"),
        (["--cvat-url", stand.url], "need --backend cvat"),
        (["--cvat-username", "someone"], "need --backend cvat"),
        (["--backend", "doccano"], "not one of labelstudio, cvat"),
    ]:
        result = CliRunner().invoke(cli, [*base, *options])
        assert result.exit_code == 2, (options, result.output)
        assert match in " ".join(result.output.split()), (options, result.output)
    monkeypatch.delenv("DAAD_CVAT_PASSWORD")
    result = CliRunner().invoke(cli, [*base, *cvat_args])
    assert result.exit_code == 2 and "DAAD_CVAT_PASSWORD" in result.output
    assert stand.tasks == tasks and not session.fiftyone().dataset_exists("cvat-refused")
