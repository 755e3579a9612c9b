"""Mask annotation on a real Label Studio server started on 127.0.0.1: real inline images of
the DAAD source list that need masks (and real SD-saliency-900 masks to fix) are sent through
FiftyOne's annotation API, an annotator's brush strokes and polygons are posted through Label
Studio's own API, and ``--load`` brings them back as RLE through the curation sync; a record
whose manifest changed is a conflict; every process started is gone afterwards, by PID.

The server runs from its own environment: ``$DAAD_LABEL_STUDIO`` or the checkout's
``.venv-label-studio`` (``scripts/setup.sh``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import replace

import cv2
import numpy as np
import psutil
import pytest
import requests
from label_studio_sdk.converter.brush import mask2rle
from typer.testing import CliRunner

from conftest import REPO, SD_ROOT, SHARED_DATA, copy_manifests
from daad.cli.app import app as cli
from daad.curate import labelstudio
from daad.curate.annotate import BRUSH, POLYGONS, TASKS_INFO, load, send
from daad.curate.dataset import UnsyncedEditsError
from daad.curate.journal import read_log
from daad.sources.ingest import ingest
from daad.loaders.daad_online_sources import iter_records
from daad.registry.manifest import read_manifest, write_manifest
from daad.masks import RLE
from daad.registry.registry import Registry
from daad.registry.roots import Roots
from daad.taxonomy import Status
from helpers.curation import annotation_registry, shared_session

NAME = "annotate-test"
ONLINE = SHARED_DATA / "daad-online-sources"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Label Studio + a registry of 5 real needs_mask records and 2 real SD-saliency-900 records."""
    with pytest.MonkeyPatch.context() as mp:
        registry, need, sd = annotation_registry(tmp_path_factory, "annotate", mp)
        session = shared_session()
        server = labelstudio.start(session, tmp_path_factory.mktemp("label-studio"))
        family = {server.process.pid, *(c.pid for c in server.process.children(recursive=True))}
        try:
            yield session, registry, server, need, sd
        finally:
            session.stop(server.process)
            assert not [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def _api(server, method: str, path: str, **kwargs):
    response = requests.request(method, f"{server.url}{path}", headers={"Authorization": f"Token {server.token}"},
                                timeout=60, **kwargs)
    assert response.status_code < 400, response.text
    return response.json() if response.content else None


def _brush(mask: np.ndarray, label: str) -> dict:
    """A brush result as Label Studio's editor submits it (RGBA run-length bits)."""
    height, width = mask.shape
    return {"from_name": BRUSH, "to_name": "image", "type": "brushlabels", "original_width": width,
            "original_height": height, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask2rle((mask * 255).astype(np.uint8)), "brushlabels": [label]}}


def _polygon(corners: np.ndarray, shape: tuple[int, int], label: str) -> dict:
    height, width = shape
    points = (corners / [width, height] * 100).tolist()  # the editor stores percent of the image size
    return {"from_name": POLYGONS, "to_name": "image", "type": "polygonlabels", "original_width": width,
            "original_height": height, "image_rotation": 0,
            "value": {"points": points, "closed": True, "polygonlabels": [label]}}


def _annotate(server, task_id: int, results: list[dict]) -> dict:
    return _api(server, "POST", f"/api/tasks/{task_id}/annotations", json={"result": results, "lead_time": 4.2})


def test_round_trip_through_label_studio(world):
    session, registry, server, need, sd = world
    fo = session.fiftyone()
    records = need + sd
    summary = send(session, registry, records, server, NAME)
    assert summary.opened.skipped == [] and summary.opened.samples == 7
    dataset = fo.load_dataset(NAME)
    tasks = {info["record_id"]: int(task) for task, info in dataset.info[TASKS_INFO].items()}
    assert sorted(tasks) == sorted(r.id for r in records)
    # one project per anomaly class, set up for brush and polygon masks of that class
    by_class = {p.anomaly_class: p for p in summary.projects}
    assert sorted(by_class) == sorted({r.anomaly_class for r in records})
    for cls, project in by_class.items():
        config = _api(server, "GET", f"/api/projects/{project.project_id}")["label_config"]
        assert f'<BrushLabels name="{BRUSH}"' in config and f'<PolygonLabels name="{POLYGONS}"' in config
        assert f'<Label value="{cls}"/>' in config
    # Label Studio serves the real image bytes of each task
    for record in records:
        task = _api(server, "GET", f"/api/tasks/{tasks[record.id]}")
        image = requests.get(f"{server.url}{task['data']['image']}", headers={"Authorization": f"Token {server.token}"},
                             timeout=60)
        assert image.status_code == 200 and image.content == registry.image_path(record).read_bytes()
    # a record that has a mask carries it as a proposal (prediction), not as an annotation
    for record in sd:
        task = _api(server, "GET", f"/api/tasks/{tasks[record.id]}")
        assert task["annotations"] == [] and len(task["predictions"]) == 1
        result = task["predictions"][0]["result"][0]
        from label_studio_sdk.converter.brush import decode_rle

        proposed = decode_rle(result["value"]["rle"]).reshape(record.height, record.width, 4)[:, :, 3]
        np.testing.assert_array_equal(proposed != 0, record.mask.decode() != 0)

    # the annotators: a brush ellipse, a polygon, brush + polygon on one image, a fixed SD mask
    expected = {}
    a, b, c = need[0], need[1], need[2]
    ellipse = np.zeros((a.height, a.width), np.uint8)
    cv2.ellipse(ellipse, (a.width // 2, a.height // 2), (a.width // 5, a.height // 6), 30, 0, 360, 1, -1)
    _annotate(server, tasks[a.id], [_brush(ellipse, a.anomaly_class)])
    expected[a.id] = ellipse
    corners = np.array([[10, 12], [b.width - 20, 15], [b.width // 2, b.height - 9]])
    _annotate(server, tasks[b.id], [_polygon(corners, (b.height, b.width), b.anomaly_class)])
    expected[b.id] = cv2.fillPoly(np.zeros((b.height, b.width), np.uint8), [corners.astype(np.int32)], 1)
    stroke = np.zeros((c.height, c.width), np.uint8)
    stroke[5:20, 5:60] = 1
    square = np.array([[c.width - 40, c.height - 40], [c.width - 5, c.height - 40], [c.width - 5, c.height - 5],
                       [c.width - 40, c.height - 5]])
    _annotate(server, tasks[c.id], [_brush(stroke, c.anomaly_class), _polygon(square, (c.height, c.width), c.anomaly_class)])
    expected[c.id] = stroke | cv2.fillPoly(np.zeros_like(stroke), [square.astype(np.int32)], 1)
    fixed = sd[0].mask.decode().copy()
    fixed[:40, :40] = 1
    _annotate(server, tasks[sd[0].id], [_brush(fixed, sd[0].anomaly_class)])
    expected[sd[0].id] = fixed
    # need[3] is annotated, but its manifest record changes after it was sent: a conflict
    d = need[3]
    corner = np.zeros((d.height, d.width), np.uint8)
    corner[:8, :8] = 1
    _annotate(server, tasks[d.id], [_brush(corner, d.anomaly_class)])
    online = registry.manifests_dir / "daad_online_sources.jsonl"
    rejected = dict(status=Status.REJECTED, reason="not an anomaly", curated=("status",))  # meanwhile, by a curator
    write_manifest(online, [replace(r, **rejected) if r.id == d.id else r for r in read_manifest(online)])

    report = load(session, server, NAME, who="tester")
    assert sorted(report.loaded) == sorted([*expected, d.id])
    assert report.waiting == 2  # need[4] and sd[1]: nobody drew them
    assert [c.record_id for c in report.all_conflicts()] == [d.id]
    assert sorted(c.record_id for c in report.sync.changes) == sorted(expected)
    manifest = {r.id: r for r in read_manifest(online)} | {
        r.id: r for r in read_manifest(registry.manifests_dir / "sd_saliency_900.jsonl")}
    for record_id, mask in expected.items():
        record = manifest[record_id]
        assert record.mask.counts == RLE.encode(mask).counts  # the drawn shape, pixel for pixel
        assert record.area == int(mask.sum()) and "mask" in record.curated
    for record in (a, b, c):
        assert manifest[record.id].status == Status.NEEDS_REVIEW and "status" in manifest[record.id].curated
    assert manifest[sd[0].id].status == Status.ACCEPTED
    assert manifest[d.id].mask is None and manifest[d.id].status == Status.REJECTED  # not applied
    log = {e["id"]: e for e in read_log(registry.manifests_dir)}
    assert sorted(log) == sorted(expected) and log[a.id]["who"] == "tester"
    assert RLE.from_json(log[a.id]["after"]["mask"]).counts == RLE.encode(ellipse).counts

    # a second load changes nothing; the conflict is reported again, still not applied
    again = load(session, server, NAME, who="tester")
    assert again.sync.changes == [], [c.describe() for c in again.sync.changes]
    assert [c.record_id for c in again.all_conflicts()] == [d.id]
    assert len(read_log(registry.manifests_dir)) == len(log)

    # re-ingest from the source keeps the drawn masks and decisions
    ingest(iter_records(ONLINE), online)
    after_ingest = {r.id: r for r in read_manifest(online)}
    assert after_ingest[d.id].status == Status.REJECTED and after_ingest[d.id].mask is None
    for record in (a, b, c):
        assert after_ingest[record.id].mask.counts == manifest[record.id].mask.counts
        assert after_ingest[record.id].status == Status.NEEDS_REVIEW

    # an annotation edited in Label Studio after its record changed: a conflict, not applied
    write_manifest(online, [replace(r, note="edited elsewhere") if r.id == a.id else r for r in read_manifest(online)])
    annotation = _api(server, "GET", f"/api/tasks/{tasks[a.id]}")["annotations"][0]
    bigger = ellipse.copy()
    bigger[: a.height // 3] = 1
    _api(server, "PATCH", f"/api/annotations/{annotation['id']}", json={"result": [_brush(bigger, a.anomaly_class)]})
    edited = load(session, server, NAME, who="tester")
    assert sorted(c.record_id for c in edited.all_conflicts()) == sorted([a.id, d.id])
    record = {r.id: r for r in read_manifest(online)}[a.id]
    assert record.mask.counts == RLE.encode(ellipse).counts and record.note == "edited elsewhere"

    # sending again sends nothing twice; the conflicting edits kept in the dataset block a refresh
    # of their records until discarded; then the changed records get new tasks (the old
    # records' mask as the proposal) and the old tasks' annotations stay conflicts
    ids = {r.id for r in records}
    current = [r for r in registry.records() if r.id in ids]
    with pytest.raises(UnsyncedEditsError):
        send(session, registry, current, server, NAME)
    resent = send(session, registry, current, server, NAME, discard_unsynced=True)
    assert resent.pending == 5 and sum(p.tasks for p in resent.projects) == 2
    assert sum(p.proposals for p in resent.projects) == 1  # a has its mask now; d has none
    new_task = max(int(t) for t, info in fo.load_dataset(NAME).info[TASKS_INFO].items() if info["record_id"] == a.id)
    assert new_task != tasks[a.id]
    _annotate(server, new_task, [_brush(bigger, a.anomaly_class)])  # drawn again on the new task: applied
    after_resend = load(session, server, NAME, who="tester")
    assert sorted(c.record_id for c in after_resend.all_conflicts()) == sorted([a.id, d.id])  # the old tasks
    assert after_resend.waiting == 3 and [c.record_id for c in after_resend.sync.changes] == [a.id]
    assert {r.id: r for r in read_manifest(online)}[a.id].mask.counts == RLE.encode(bigger).counts

    # the command line: --load against the running server, JSON out, exit 1 on conflicts
    result = CliRunner().invoke(cli, [
        "curate", "annotate", "--load", "--name", NAME, "--database-dir", str(session.database_dir),
        "--label-studio-url", server.url, "--label-studio-token", server.token,
        "--manifests", str(registry.manifests_dir), "--json", "--dry-run"])
    assert result.exit_code == 1, result.output
    out = json.loads(result.output)
    assert sorted(c["id"] for c in out["conflicts"]) == sorted([a.id, d.id]) and out["waiting"] == 3


def test_wrong_token_and_missing_server_are_refused(world, tmp_path):
    _, _, server, _, _ = world
    with pytest.raises(labelstudio.CurationEnvError, match="refuses the API token"):
        labelstudio.existing(server.url, "not-the-token")
    with pytest.MonkeyPatch.context() as mp, pytest.raises(labelstudio.CurationEnvError, match="--label-studio-bin"):
        mp.setenv("DAAD_LABEL_STUDIO", str(tmp_path / "missing"))
        mp.setenv("PATH", str(tmp_path))
        mp.setattr(labelstudio, "REPO", tmp_path)
        labelstudio.find_executable(tmp_path / "no-such-label-studio")


def test_cli_sends_to_an_existing_server_by_upload(world):
    """``daad curate annotate`` against a server given by URL + token: images are uploaded."""
    session, registry, server, need, _ = world
    record = need[4]
    result = CliRunner().invoke(cli, [
        "curate", "annotate", "--id", record.id, "--name", "annotate-cli", "--database-dir", str(session.database_dir),
        "--label-studio-url", server.url, "--label-studio-token", server.token,
        "--manifests", str(registry.manifests_dir), "--root", f"daad_online_sources={ONLINE}", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["samples"] == 1 and [p["tasks"] for p in out["projects"]] == [1]
    tasks = _api(server, "GET", "/api/tasks", params={"project": out["projects"][0]["project_id"], "fields": "all"})
    (task,) = tasks["tasks"]
    assert task["data"]["image"].startswith("/data/upload/")
    image = requests.get(f"{server.url}{task['data']['image']}", headers={"Authorization": f"Token {server.token}"},
                         timeout=60)
    assert image.status_code == 200 and image.content == registry.image_path(record).read_bytes()
    # nothing drawn yet: --load applies nothing and reports the task as waiting
    result = CliRunner().invoke(cli, [
        "curate", "annotate", "--load", "--name", "annotate-cli", "--database-dir", str(session.database_dir),
        "--label-studio-url", server.url, "--label-studio-token", server.token,
        "--manifests", str(registry.manifests_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["waiting"] == 1 and json.loads(result.output)["sync"]["changes"] == []



def _proposal_world(world, tmp_path):
    """A registry of its own (manifests in ``tmp_path``): need[0..3] without masks, need[2] with a
    box but no mask, sd[0] with its mask; a tiny SAM on disk; a prompts file for need[0] (box),
    need[1] (click) and sd[0] (whose existing mask wins)."""
    session, _, server, need, sd = world
    manifests = copy_manifests(tmp_path / "manifests", "sd_saliency_900")
    boxed = replace(need[2], bbox=(need[2].width // 4, need[2].height // 4, need[2].width // 2, need[2].height // 2))
    write_manifest(manifests / "daad_online_sources.jsonl", [need[0], need[1], boxed, need[3]])
    write_manifest(manifests / "sd_saliency_900.jsonl", [sd[0]])
    roots = {"sd_saliency_900": SD_ROOT, "daad_online_sources": ONLINE}
    registry = Registry(manifests, Roots(roots))
    prompts = {need[0].id: {"box": [5, 6, need[0].width // 2, need[0].height // 2]},
               need[1].id: {"point": [need[1].width // 3, need[1].height // 2]},
               sd[0].id: {"box": [0, 0, 10, 10]}}
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in prompts.items()))
    args = ["--database-dir", str(session.database_dir), "--label-studio-url", server.url, "--label-studio-token",
            server.token, "--manifests", str(manifests), *(f for k, v in roots.items() for f in ("--root", f"{k}={v}"))]
    return registry, [need[0], need[1], boxed, need[3], sd[0]], prompts, prompts_file, args


def test_sam_proposals_prefill_the_tasks_and_are_never_loaded_as_annotations(world, tmp_path):
    """``--sam-model`` with a tiny random SAM saved to disk: each task of a record without a mask
    carries SAM's mask for its prompt (prompts file, else the record's box) as a prediction of
    model version ``daad-sam-proposal``, equal to the model's own output; ``--load`` reads none
    of them back; an annotation drawn over one is what is loaded."""
    from label_studio_sdk.converter.brush import decode_rle
    from PIL import Image, ImageOps

    from helpers.tiny_sam import build_tiny_sam, sam_mask

    session, _, server, _, _ = world
    registry, (a, b, boxed, bare, fixed), prompts, prompts_file, args = _proposal_world(world, tmp_path)
    sam = build_tiny_sam(tmp_path / "sam")
    before = {p.name: p.read_bytes() for p in registry.manifests()}
    name = "annotate-sam"
    session.fiftyone()  # imported here, FiftyOne logs to pytest's stdout, not into the command's JSON output
    result = CliRunner().invoke(cli, [
        "curate", "annotate", "--id", a.id, "--id", b.id, "--id", boxed.id, "--id", bare.id, "--id", fixed.id,
        "--name", name, "--sam-model", str(sam), "--prompts", str(prompts_file), "--device", "cpu", "--json", *args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["samples"] == 5 and out["sam_proposals"] == 3 and out["unprompted"] == [bare.id]
    assert out["unproposed"] == [] and sum(p["proposals"] for p in out["projects"]) == 1
    tasks = {info["record_id"]: int(t) for t, info in session.fiftyone().load_dataset(name).info[TASKS_INFO].items()}

    def image(record):
        return np.asarray(ImageOps.exif_transpose(Image.open(registry.image_path(record))).convert("RGB"))

    expected = {a.id: sam_mask(sam, image(a), box=prompts[a.id]["box"]),
                b.id: sam_mask(sam, image(b), point=prompts[b.id]["point"]),
                boxed.id: sam_mask(sam, image(boxed), box=list(boxed.bbox)),
                fixed.id: fixed.mask.decode() != 0}  # its own mask, not SAM's
    versions = {}
    for record in (a, b, boxed, bare, fixed):
        task = _api(server, "GET", f"/api/tasks/{tasks[record.id]}")
        assert task["annotations"] == []
        if record is bare:
            assert task["predictions"] == []
            continue
        (prediction,) = task["predictions"]
        versions.setdefault(task["project"], set()).add(prediction["model_version"])
        assert prediction["model_version"] == ("daad-existing-mask" if record is fixed else "daad-sam-proposal")
        (result,) = prediction["result"]
        assert result["value"]["brushlabels"] == [record.anomaly_class]
        mask = expected[record.id]
        assert 0 < mask.sum() < mask.size
        proposed = decode_rle(result["value"]["rle"]).reshape(*mask.shape, 4)[:, :, 3]
        np.testing.assert_array_equal(proposed != 0, mask, err_msg=record.id)
    for project, kinds in versions.items():  # Label Studio shows a project's model version only: all when mixed
        shown = _api(server, "GET", f"/api/projects/{project}")["model_version"]
        assert shown == (kinds.pop() if len(kinds) == 1 else ""), (project, shown)

    # --load: predictions are not annotations; nothing is loaded, every task waits, no manifest changes
    report = load(session, server, name, manifests_dir=registry.manifests_dir, who="tester")
    assert report.loaded == [] and report.waiting == 5 and report.empty == []
    assert report.sync.changes == [] and report.all_conflicts() == []
    assert {p.name: p.read_bytes() for p in registry.manifests()} == before
    # an annotator draws over a's proposal: the drawing is loaded, not the proposal
    drawn = np.zeros((a.height, a.width), np.uint8)
    drawn[10:30, 20:60] = 1
    _annotate(server, tasks[a.id], [_brush(drawn, a.anomaly_class)])
    report = load(session, server, name, manifests_dir=registry.manifests_dir, who="tester")
    assert report.loaded == [a.id] and report.waiting == 4 and [c.record_id for c in report.sync.changes] == [a.id]
    written = {r.id: r for r in read_manifest(registry.manifests_dir / "daad_online_sources.jsonl")}
    assert written[a.id].mask.counts == RLE.encode(drawn).counts
    assert written[b.id].mask is None and written[boxed.id].mask is None


def test_a_bad_sam_model_or_prompts_file_refuses_and_changes_nothing(world, tmp_path):
    from daad.curate.proposals import PromptsError, ProposalModelError
    from helpers.tiny_sam import build_tiny_sam

    session, _, server, _, _ = world
    registry, records, prompts, prompts_file, args = _proposal_world(world, tmp_path)
    sam = build_tiny_sam(tmp_path / "sam")
    broken = build_tiny_sam(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    projects = _api(server, "GET", "/api/projects", params={"page_size": 1000})["count"]
    manifests = {p.name: p.read_bytes() for p in registry.manifests()}
    name = "annotate-refused"
    select = [f for r in records for f in ("--id", r.id)] + ["--name", name, *args]
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(prompts_file.read_text() + json.dumps({"id": "daad_online_sources/crack/no-such", "box": [0, 0, 1, 1]}))
    shapes = tmp_path / "shapes.jsonl"
    shapes.write_text(json.dumps({"id": records[0].id, "box": [0, 0, 5]}) + "\n"
                      + json.dumps({"id": records[1].id, "point": [-1, 2]}))
    for options, error, match in [
        (["--sam-model", str(tmp_path / "no-sam")], ProposalModelError, "is not a folder"),
        (["--sam-model", str(broken)], ProposalModelError, "cannot be loaded"),
        (["--sam-model", str(sam), "--prompts", str(unknown)], PromptsError, "line 4: unknown record id"),
        (["--sam-model", str(sam), "--prompts", str(shapes)], PromptsError, "2 bad prompt line"),
    ]:
        result = CliRunner().invoke(cli, ["curate", "annotate", *select, *options])
        assert isinstance(result.exception, error), result.output
        assert re.search(match, str(result.exception)), result.exception
    for options in (["--prompts", str(prompts_file)], ["--load", "--sam-model", str(sam)]):
        result = CliRunner().invoke(cli, ["curate", "annotate", *select, *options])
        assert result.exit_code == 2, result.output
    assert _api(server, "GET", "/api/projects", params={"page_size": 1000})["count"] == projects
    assert not session.fiftyone().dataset_exists(name)
    assert {p.name: p.read_bytes() for p in registry.manifests()} == manifests

def test_a_server_that_never_listens_is_stopped_at_its_deadline(tmp_path):
    """A ``label-studio`` that never opens its port: refused after the start deadline, and
    the process (and its child) stopped by PID, not left behind."""
    fake = tmp_path / "label-studio"
    fake.write_text("#!/bin/sh\nsleep 612345 &\nwait\n")  # a child with a name to look for
    fake.chmod(0o755)
    session = shared_session()
    before = set(session.pids())
    with pytest.raises(labelstudio.CurationEnvError, match="did not listen on port .* within 3s"):
        labelstudio.start(session, tmp_path / "data", executable=fake, timeout=3)
    started = [p for p in psutil.process_iter(["cmdline"]) if {str(fake), "612345"} & set(p.info["cmdline"] or [])]
    assert started == [] and set(session.pids()) == before


def test_a_killed_commands_label_studio_is_stopped_by_the_next(tmp_path):
    """``daad curate annotate`` killed with -9 while serving leaves Label Studio running; the
    next ``daad curate annotate --load`` on its data folder joins it, then stops it by PID."""
    manifests = copy_manifests(tmp_path / "manifests", "sd_saliency_900")
    record = next(iter(read_manifest(manifests / "sd_saliency_900.jsonl")))
    data = tmp_path / "label-studio"
    common = ["--name", "annotate-killed", "--database-dir", str(tmp_path / "fiftyone"), "--label-studio-dir", str(data),
              "--manifests", str(manifests), "--root", f"sd_saliency_900={SD_ROOT}"]
    command = [sys.executable, "-m", "daad", "curate", "annotate", *common]
    killed = subprocess.Popen([*command, "--id", record.id], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    deadline, output = time.monotonic() + labelstudio.START_TIMEOUT_S, []
    while "Ctrl-C stops Label Studio" not in "".join(output):  # sent, and serving
        assert killed.poll() is None and time.monotonic() < deadline, "".join(output)
        output.append(killed.stdout.readline())
    state = json.loads((data / labelstudio.STATE_FILE).read_text())
    orphan = psutil.Process(state["pid"])
    family = [orphan, *orphan.children(recursive=True)]
    killed.kill()
    killed.wait(timeout=10)
    killed.stdout.close()
    assert orphan.is_running() and state["owner"] == killed.pid

    result = subprocess.run([*command, "--load", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["waiting"] == 1  # the task the killed command sent, found on the joined server
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert alive == [], alive
