"""``daad curate annotate``: records that need a mask -> Label Studio (or CVAT) tasks, finished masks -> manifests.

Sending opens the records in a FiftyOne dataset (``daad-annotate`` by default, through
:func:`daad.curate.dataset.open_records`, so each sample pins its manifest line) and
creates, with FiftyOne's annotation API (``backend="labelstudio"``), one Label Studio
project per anomaly class whose labelling config has a brush (``drawn_mask``) and a
polygon (``drawn_polygons``) tool for that class. A daad-started server serves the images
itself (hard links or copies under its media folder); an existing server gets them
uploaded. A record that already has a mask (fixing a bad mask) gets it as a Label Studio
*prediction* (model version ``daad-existing-mask``): shown to the annotator as a proposal
to edit, never read back as an annotation. FiftyOne 1.22's backend cannot pre-fill it
(its ``_to_segmentation`` reads ``Segmentation.label``, which does not exist), so daad posts
it through Label Studio's REST API.

Given a local SAM model (:mod:`daad.curate.proposals`), a record without a mask gets SAM's
mask for its prompt (the prompts file's box or click, else the record's ``bbox``) as a
prediction of model version ``daad-sam-proposal``; a record that has a mask keeps that mask
as its one proposal (SAM is not run for it: the annotator fixes the curated mask), and a
record with no prompt gets none (counted). Every proposal is computed before the first task
is sent. A project whose tasks carry both kinds shows every prediction (its ``model_version``
is left empty: Label Studio shows only the predictions of a project's model version).

Loading reads each task's latest submitted annotation (predictions and skipped tasks are
not annotations) through Label Studio's REST API and decodes its results with FiftyOne's
``import_label_studio_annotation``; the union of its brush strokes and polygons is the
mask. FiftyOne's own ``load_annotations`` is not used: it reads an unannotated task's
predictions as if they were annotations and keeps one brush stroke of several. The mask
goes into the sample's ``ground_truth`` and then through :func:`daad.curate.sync.sync`, the
same path as the App's edits: journalled in the curation log, written to the manifest,
kept by re-ingest, and a conflict (not applied) when the manifest line is not the one
sent. A record whose sample was refreshed or dropped after its task was sent (its manifest
changed, and ``annotate`` ran again) is a conflict too. A record that was ``needs_mask``
becomes ``needs_review``: a curator accepts the drawn mask in ``daad curate open``.

With a :class:`~daad.curate.cvat.CVAT` server the same send and load run through FiftyOne's
CVAT backend (``backend="cvat"``, with daad's deadlines): one CVAT task per anomaly class,
labelled with that class, its images uploaded. CVAT has no prediction layer, so a record's
existing mask goes as an annotation (a ``mask`` shape, through the ``cvat_mask`` instances
field) that the annotator edits, and SAM proposals are refused. Loading downloads each run's
shapes with the backend's ``download_annotations`` (what ``load_annotations`` merges; daad
merges through the sync instead) and takes the union of an image's masks and polygons; an
image still holding exactly the mask it was sent with, or nothing, is waiting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import requests

from daad.atomic import link_or_copy
from daad.curate.dataset import CLASS_FIELD, MASK_FIELD, OpenSummary, file_stem, fingerprint, open_records
from daad.curate.cvat import CVAT, CVATError
from daad.curate.labelstudio import LabelStudio
from daad.curate.proposals import SAM_VERSION, Prompt, SamProposer, prompt_for
from daad.curate.session import CurationEnvError, CurationSession
from daad.curate.sync import Conflict, SyncReport, sync
from daad.errors import RecordFileError
from daad.images import decode_image, read_file, to_rgb_array
from daad.masks import RLE
from daad.registry.manifest import dumps
from daad.record import Record
from daad.registry.registry import Registry
from daad.taxonomy import Status

DEFAULT_NAME = "daad-annotate"
BRUSH, POLYGONS = "drawn_mask", "drawn_polygons"
MEDIA_FIELD = "annotation_image"
TASK_FIELD = "label_studio_task"
RUN_PREFIX = "daad_"
PROPOSAL_VERSION = "daad-existing-mask"
TASKS_INFO = "label_studio_tasks"
"""``dataset.info`` key: task id -> the record id and manifest-line fingerprint it was sent with."""
HTTP_TIMEOUT_S = 60.0
CVAT_FIELD = "cvat_mask"
"""Instances field whose masks (a record's existing mask) go to CVAT as annotations to edit."""
CVAT_TASK_FIELD = "cvat_task"
CVAT_INFO = "cvat_samples"
"""``dataset.info`` key: sample id -> the record id, fingerprint, CVAT task, image size and pre-filled mask it was sent with."""


@dataclass
class Project:
    anomaly_class: str
    project_id: int
    """Label Studio: the class's project; CVAT: the class's task."""
    url: str
    tasks: int
    """Records sent (Label Studio: one task each; CVAT: one image each of the class's task)."""
    proposals: int
    """Tasks pre-filled with the record's existing mask."""
    sam_proposals: int = 0
    """Tasks pre-filled with SAM's mask for the record's prompt."""


@dataclass
class SendSummary:
    opened: OpenSummary
    projects: list[Project] = field(default_factory=list)
    pending: int = 0
    """Samples whose task was sent by an earlier run (not sent again)."""
    unprompted: list[str] = field(default_factory=list)
    """With a SAM model: records sent with neither a mask nor a prompt (so without a proposal)."""
    unproposed: list[str] = field(default_factory=list)
    """With a SAM model: records whose image SAM could not read (why), sent without a proposal."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    """Records given a drawn mask by this load (before the sync)."""
    waiting: int = 0
    """Tasks without a submitted annotation yet."""
    empty: list[str] = field(default_factory=list)
    """Records whose annotation holds no mask (an annotator found no anomaly?)."""
    conflicts: list[Conflict] = field(default_factory=list)
    sync: SyncReport | None = None

    def all_conflicts(self) -> list[Conflict]:
        return self.conflicts + (self.sync.conflicts if self.sync else [])


def send(
    session: CurationSession,
    registry: Registry,
    records: Iterable[Record],
    server: LabelStudio | CVAT,
    name: str = DEFAULT_NAME,
    *,
    discard_unsynced: bool = False,
    proposer: SamProposer | None = None,
    prompts: dict[str, Prompt] | None = None,
) -> SendSummary:
    """Send ``records`` (and keep the ones an earlier run sent) to Label Studio or CVAT for masks; with
    ``proposer`` (Label Studio only), records without a mask get SAM's proposal for their prompt
    (``prompts``, else their box)."""
    if proposer is not None and isinstance(server, CVAT):
        raise ValueError("SAM proposals need Label Studio's predictions; CVAT has no proposal layer")
    fo = session.fiftyone()
    selected = {r.id: r for r in records}
    if fo.dataset_exists(name):  # records sent earlier stay in the dataset, at their current manifest line
        sent = set(fo.load_dataset(name).distinct("record_id"))
        selected.update({r.id: r for r in registry.records() if r.id in sent and r.id not in selected})
    dataset, opened = open_records(session, registry, selected.values(), name, discard_unsynced=discard_unsynced)
    summary = SendSummary(opened)
    task_field = _BACKENDS[type(server)].task_field
    new = dataset.exists(task_field, False) if dataset.has_sample_field(task_field) else dataset.view()
    summary.pending = len(dataset) - len(new)
    proposed = _propose(new, selected, proposer, prompts or {}, summary) if proposer else {}
    if isinstance(server, LabelStudio) and server.media_root is not None:
        _stage_media(new, server.media_root / _safe(name))
    runs = len(dataset.list_annotation_runs())
    tasks = dict(dataset.info.get(TASKS_INFO, {}))
    for anomaly_class in sorted(new.distinct(f"{CLASS_FIELD}.label")):
        view = new.match(fo.ViewField(f"{CLASS_FIELD}.label") == anomaly_class)
        runs += 1
        if isinstance(server, CVAT):
            summary.projects.append(_send_cvat(fo, dataset, view, f"{RUN_PREFIX}{runs}_{_safe(anomaly_class)}",
                                               f"daad {name} {anomaly_class} {runs}", anomaly_class, server))
            continue
        with _local_files(server):
            results = view.annotate(
                f"{RUN_PREFIX}{runs}_{_safe(anomaly_class)}", backend="labelstudio", url=server.url,
                api_key=server.token, media_field=MEDIA_FIELD if server.media_root else "filepath",
                project_name=f"daad {name} {anomaly_class} {runs}",
                label_schema={BRUSH: {"type": "segmentation", "mask_targets": {255: anomaly_class}},
                              POLYGONS: {"type": "polylines", "classes": [anomaly_class]}},
            )
        by_sample = {sample_id: task_id for task_id, sample_id in results.uploaded_tasks.items()}
        proposals = []
        for sample in view.select(list(by_sample)).iter_samples(autosave=True, progress=False):
            task_id = by_sample[sample.id]
            sample[TASK_FIELD] = task_id
            tasks[str(task_id)] = {"record_id": sample["record_id"], "fingerprint": sample["fingerprint"]}
            if sample[MASK_FIELD] is not None:
                proposals.append(proposal(task_id, anomaly_class, sample[MASK_FIELD].get_mask()))
            elif sample.id in proposed:
                proposals.append(proposal(task_id, anomaly_class, proposed[sample.id].decode(), SAM_VERSION))
        if proposals:
            _request(server, "POST", f"/api/projects/{results.project_id}/import/predictions", json=proposals)
            versions = {p["model_version"] for p in proposals}  # one: show it; both kinds: show every prediction
            shown = versions.pop() if len(versions) == 1 else ""
            _request(server, "PATCH", f"/api/projects/{results.project_id}",
                     json={"model_version": shown, "show_collab_predictions": True})
        sam = sum(p["model_version"] == SAM_VERSION for p in proposals)
        summary.projects.append(Project(anomaly_class, results.project_id, f"{server.url}/projects/"
                                        f"{results.project_id}/data", len(by_sample), len(proposals) - sam, sam))
        dataset.info[TASKS_INFO] = tasks
        dataset.save()
    return summary


def _send_cvat(fo, dataset, view, key: str, title: str, anomaly_class: str, server: CVAT) -> Project:
    """One CVAT task for the class's samples (``view``) through FiftyOne's CVAT backend; a record's
    existing mask goes with it as an annotation (a ``mask`` shape) for the annotator to edit."""
    if not dataset.has_sample_field(CVAT_FIELD):
        dataset.add_sample_field(CVAT_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    prefills = {}
    for sample in view.iter_samples(autosave=True, progress=False):
        mask = sample[MASK_FIELD].get_mask() != 0 if sample[MASK_FIELD] is not None else None
        if mask is not None and mask.any():
            sample[CVAT_FIELD] = fo.Segmentation(mask=mask.astype(np.uint8)).to_detections({1: anomaly_class})
            prefills[sample.id] = mask_print(mask)
        else:
            sample[CVAT_FIELD] = None
    try:
        results = view.annotate(key, backend="cvat", label_field=CVAT_FIELD, label_type="instances",
                                classes=[anomaly_class], task_name=title, **server.credentials(),
                                config_cls="daad.curate.cvat_backend.DeadlineCVATBackendConfig")
    except (requests.RequestException, CVATError) as exc:
        if key in dataset.list_annotation_runs():  # registered before the upload failed: forget it
            dataset.delete_annotation_run(key)
        raise CVATError(f"CVAT at {server.url}: sending the {anomaly_class!r} task failed ({exc}); its records stay "
                        "unsent (the next `daad curate annotate` sends them; delete a half-made task in CVAT)") from None
    sent = dict(dataset.info.get(CVAT_INFO, {}))
    frames = {data["sample_id"]: (task_id, frame) for task_id in results.task_ids
              for frame, data in results.frame_id_map[task_id].items()}
    for sample in view.select(list(frames)).iter_samples(autosave=True, progress=False):
        task_id, frame = frames[sample.id]
        sample[CVAT_TASK_FIELD] = task_id
        sent[sample.id] = {"record_id": sample["record_id"], "fingerprint": sample["fingerprint"], "task": task_id,
                           "frame": frame, "size": [sample.metadata.width, sample.metadata.height],
                           "prefill": prefills.get(sample.id)}
    dataset.info[CVAT_INFO] = sent
    dataset.save()
    task_id = results.task_ids[0]
    return Project(anomaly_class, task_id, f"{server.url}/tasks/{task_id}", len(frames), len(prefills))


def mask_print(mask: np.ndarray) -> str:
    """A short fingerprint of a binary mask (its shape and pixels)."""
    return fingerprint(f"{mask.shape}:{RLE.encode(mask != 0).counts}")


def load(
    session: CurationSession,
    server: LabelStudio | CVAT,
    name: str = DEFAULT_NAME,
    *,
    manifests_dir: Path | None = None,
    dry_run: bool = False,
    who: str | None = None,
) -> LoadReport:
    """Bring the finished masks of dataset ``name``'s Label Studio (or CVAT) tasks into the manifests."""
    fo = session.fiftyone()
    if not fo.dataset_exists(name):
        raise CurationEnvError(f"no FiftyOne dataset {name!r}: run `daad curate annotate` (without --load) first")
    dataset = fo.load_dataset(name)
    report = LoadReport()
    backend = _BACKENDS[type(server)]
    info_key, what = backend.info_key, backend.name
    sent = dataset.info.get(info_key, {})
    drawn = backend.drawn(dataset, server, sent, report)
    ids = sorted({record_id for record_id, *_ in drawn})
    samples = {s["record_id"]: s for s in dataset.select_by("record_id", ids).iter_samples(progress=False)}
    for record_id, task, sent_print, mask in sorted(drawn, key=_by_record_and_task):
        sample = samples.get(record_id)
        if sample is None or sample["fingerprint"] != sent_print:
            report.conflicts.append(Conflict(
                record_id, f"manifest record changed after it was sent to {what} ({task}); the mask drawn on "
                           f"the old record is not applied (delete the task in {what} to drop it)"))
            continue
        if sample[MASK_FIELD] is not None and sample[MASK_FIELD].mask is not None \
                and np.array_equal(sample[MASK_FIELD].mask != 0, mask != 0):
            continue  # loaded before
        sample[MASK_FIELD] = fo.Segmentation(mask=mask * np.uint8(255))
        if sample["status"] == Status.NEEDS_MASK and "needs_review" not in sample.tags:
            sample.tags.append("needs_review")
        sample.save()
        report.loaded.append(record_id)
    report.sync = sync(session, name, manifests_dir=manifests_dir, dry_run=dry_run, who=who)
    if report.sync.applied:  # the records now carry the drawn masks: later loads compare against these lines
        done = {c.record_id: (fingerprint(dumps(c.before)), fingerprint(dumps(c.after)))
                for c in report.sync.changes + report.sync.recovered}
        for task_id, info in sent.items():
            if done.get(info["record_id"], (None,))[0] == info["fingerprint"]:
                sent[task_id] = {**info, "fingerprint": done[info["record_id"]][1]}
        dataset.info[info_key] = sent
        dataset.save()
    return report


def _by_record_and_task(drawn: tuple) -> tuple:
    return drawn[0], [int(n) for n in re.findall(r"\d+", drawn[1])]


def _drawn_labelstudio(dataset, server: LabelStudio, sent: dict, report: LoadReport) -> list[tuple]:
    """(record id, "task N", fingerprint sent, mask) of every daad task with a submitted mask."""
    drawn = []
    for key in dataset.list_annotation_runs():
        if not key.startswith(RUN_PREFIX) or dataset.get_annotation_info(key).config.name != "labelstudio":
            continue
        for task in _tasks(server, dataset.load_annotation_results(key, cache=False).project_id):
            info = sent.get(str(task["id"]))
            if info is None:  # a task added in Label Studio by hand (or by a send killed half way): not daad's
                continue
            annotations = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
            if not annotations:
                report.waiting += 1
                continue
            latest = max(annotations, key=lambda a: a.get("updated_at") or "")
            mask = drawn_mask(latest.get("result", []))
            if mask is None:
                report.empty.append(info["record_id"])
                continue
            drawn.append((info["record_id"], f"task {task['id']}", info["fingerprint"], mask))
    return drawn


def _drawn_cvat(dataset, server: CVAT, sent: dict, report: LoadReport) -> list[tuple]:
    """(record id, "task N, image F", fingerprint sent, mask) of every image of daad's CVAT tasks
    whose saved shapes (the union of its masks and polygons) differ from the mask pre-filled."""
    drawn = []
    for key in dataset.list_annotation_runs():
        if not key.startswith(RUN_PREFIX) or dataset.get_annotation_info(key).config.name != "cvat":
            continue
        results = dataset.load_annotation_results(key, cache=False, **server.credentials())
        if results is None:  # a send killed before its results were saved: nothing of it was recorded as sent
            continue
        try:
            labels = results.backend.download_annotations(results).get(CVAT_FIELD, {}).get("detections", {})
        except requests.RequestException as exc:
            raise CVATError(f"CVAT at {server.url}: reading run {key!r} failed: {exc}") from None
        for task_id in results.task_ids:
            for frame, data in sorted(results.frame_id_map[task_id].items()):
                info = sent.get(data["sample_id"])
                if info is None:
                    continue
                mask = pasted_mask(labels.get(data["sample_id"], {}).values(), *info["size"])
                if mask is None and info["prefill"]:  # the pre-filled mask deleted
                    report.empty.append(info["record_id"])
                elif mask is None:  # nothing saved yet
                    report.waiting += 1
                elif mask_print(mask) == info["prefill"]:
                    report.waiting += 1  # the pre-filled mask, untouched
                else:
                    drawn.append((info["record_id"], f"task {task_id}, image {frame}", info["fingerprint"], mask))
    return drawn


@dataclass(frozen=True)
class _Backend:
    """What differs between the two servers in the dataset: the sample field of a sent record's
    task, the ``dataset.info`` key of what was sent, and how drawn masks are read back."""

    name: str
    task_field: str
    info_key: str
    drawn: Callable[..., list[tuple]]


_BACKENDS = {LabelStudio: _Backend("Label Studio", TASK_FIELD, TASKS_INFO, _drawn_labelstudio),
             CVAT: _Backend("CVAT", CVAT_TASK_FIELD, CVAT_INFO, _drawn_cvat)}


def pasted_mask(detections, width: int, height: int) -> np.ndarray | None:
    """The union (0/1 ``uint8``, ``height x width``) of FiftyOne detections' instance masks, each
    pasted at its box's top-left pixel; ``None`` when it is empty."""
    mask = np.zeros((height, width), np.uint8)
    for detection in detections:
        if detection.mask is None:
            continue
        x0, y0 = round(detection.bounding_box[0] * width), round(detection.bounding_box[1] * height)
        part = detection.mask != 0
        part = part[max(0, -y0):, max(0, -x0):]
        x0, y0 = max(0, x0), max(0, y0)
        region = mask[y0:y0 + part.shape[0], x0:x0 + part.shape[1]]
        region |= part[:region.shape[0], :region.shape[1]]
    return mask if mask.any() else None


def drawn_mask(results: list[dict]) -> np.ndarray | None:
    """The union (0/1 ``uint8``) of an annotation's brush strokes and polygons; ``None`` when it has none."""
    from fiftyone.utils.labelstudio import import_label_studio_annotation

    mask = None
    for result in results:
        if result.get("type") not in ("brushlabels", "polygonlabels") or result.get("from_name") not in (BRUSH, POLYGONS):
            continue
        height, width = int(result["original_height"]), int(result["original_width"])
        mask = np.zeros((height, width), np.uint8) if mask is None else mask
        _, label = import_label_studio_annotation(result)
        if result["type"] == "brushlabels":
            mask |= (label.mask != 0).astype(np.uint8)
        else:
            for points in label.points:
                corners = np.round(np.asarray(points) * [width, height]).astype(np.int32)
                cv2.fillPoly(mask, [corners], 1)
    return mask if mask is not None and mask.any() else None


def _tasks(server: LabelStudio, project_id: int) -> list[dict]:
    """Every task of a project with its annotations (Label Studio's data manager API, paged)."""
    tasks, page = [], 1
    while True:
        body = _request(server, "GET", "/api/tasks", params={"project": project_id, "fields": "all", "page": page,
                                                             "page_size": 100}).json()
        tasks.extend(body["tasks"])
        if not body["tasks"] or len(tasks) >= body["total"]:
            return tasks
        page += 1


def proposal(task_id: int, anomaly_class: str, mask: np.ndarray, model_version: str = PROPOSAL_VERSION) -> dict:
    """A Label Studio prediction holding ``mask`` as a brush result: a proposal the annotator edits."""
    from label_studio_sdk.converter.brush import mask2rle

    height, width = mask.shape
    result = {"from_name": BRUSH, "to_name": "image", "type": "brushlabels", "original_width": width,
              "original_height": height, "image_rotation": 0,
              "value": {"format": "rle", "rle": mask2rle(((mask != 0) * 255).astype(np.uint8)),
                        "brushlabels": [anomaly_class]}}
    return {"task": task_id, "result": [result], "model_version": model_version}


def _propose(view, records: dict[str, Record], proposer: SamProposer, prompts: dict[str, Prompt],
             summary: SendSummary) -> dict[str, RLE]:
    """SAM's mask (as RLE) by sample id for each sample of ``view`` without a mask but with a prompt."""
    proposed = {}
    for sample in view.exists(MASK_FIELD, False).iter_samples(progress=False):
        record_id = sample["record_id"]
        prompt = prompt_for(records[record_id], prompts)
        if prompt is None:
            summary.unprompted.append(record_id)
            continue
        try:
            image = to_rgb_array(decode_image(read_file(Path(sample.filepath), record_id), record_id, sample.filepath))
        except RecordFileError as exc:
            summary.unproposed.append(str(exc))
            continue
        proposed[sample.id] = RLE.encode(proposer.mask(image, prompt))
    return proposed


def _request(server: LabelStudio, method: str, path: str, **kwargs) -> requests.Response:
    try:
        response = requests.request(method, f"{server.url}{path}", headers={"Authorization": f"Token {server.token}"},
                                    timeout=HTTP_TIMEOUT_S, **kwargs)
    except requests.RequestException as exc:
        raise CurationEnvError(f"Label Studio at {server.url}: {method} {path} failed: {exc}") from None
    if response.status_code >= 400:
        raise CurationEnvError(f"Label Studio at {server.url}: {method} {path}: HTTP {response.status_code} "
                               f"{response.text[:300]}")
    return response


def _stage_media(view, folder: Path) -> None:
    """Hard-link (else copy) each sample's image under the server's image folder (named by its
    manifest line too, so a record whose image changed is not shown its old one)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sample in view.iter_samples(autosave=True, progress=False):
        source = Path(sample.filepath)
        dest = folder / f"{file_stem(sample['record_id'])}-{sample['fingerprint'][:8]}{source.suffix.lower()}"
        link_or_copy(source, dest)
        sample[MEDIA_FIELD] = str(dest)


class _local_files:
    """FiftyOne's backend reads Label Studio's local-files settings from this process's
    environment: set them to the server's for a daad-started server, clear them otherwise."""

    KEYS = ("LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")

    def __init__(self, server: LabelStudio) -> None:
        self.values = dict(zip(self.KEYS, ("true", str(server.media_root)))) if server.media_root else {}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.pop(k, None) for k in self.KEYS}
        os.environ.update(self.values)

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)
