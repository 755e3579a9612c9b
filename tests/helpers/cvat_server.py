"""A stand-in for a remote CVAT 2.x server on 127.0.0.1 (CVAT itself needs Docker, PostgreSQL
and Redis, and app.cvat.ai is out of reach from the tests).

It answers exactly the endpoints FiftyOne 1.x's CVAT backend (``fiftyone.utils.cvat``) calls to
send images for annotation and read the annotations back: login, server version, task
creation, the task's labels, multipart image upload, data meta, jobs, task and job
annotations (GET/PUT, and PATCH as CVAT's editor saves), task deletion; no projects or users
(daad sends neither a project name nor assignees). State is kept in memory
in CVAT's JSON shapes. :meth:`CVATServer.draw_mask` and :meth:`CVATServer.draw_polygon` save a
shape the way CVAT's editor does (``PATCH /api/jobs/{id}/annotations?action=create``): a
``mask`` shape holds CVAT's run-length points (runs over the shape's box, starting with a
background run, then the box's inclusive ``left, top, right, bottom``)."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import numpy as np
import requests
from PIL import Image

from helpers.loopback import LoopbackServer, dispatching, read_body, reply, route

VERSION = "2.20.0"


@dataclass
class Task:
    id: int
    name: str
    labels: list[dict]
    frames: list[dict] = field(default_factory=list)
    """``{"name", "width", "height", "data"}`` per uploaded image, in upload order."""
    jobs: list[int] = field(default_factory=list)
    annotations: dict = field(default_factory=lambda: {"version": 0, "shapes": [], "tags": [], "tracks": []})


class CVATServer(LoopbackServer):
    """A threaded HTTP server answering FiftyOne's CVAT calls for one user."""

    def __init__(self, username: str = "annotator", password: str = "secret-pass") -> None:
        self.username, self.password = username, password
        self.sessions: set[str] = set()
        self.tasks: dict[int, Task] = {}
        self.jobs: dict[int, int] = {}
        """job id -> task id (one job a task: FiftyOne sends no segment size)."""
        self.requests: list[tuple[str, str]] = []
        self.make_jobs = True
        """False: an upload creates no job (a CVAT whose workers are down)."""
        self._ids = iter(range(1, 10**9))
        self._lock = threading.Lock()
        LoopbackServer.__init__(self, dispatching(self._handle, ("GET", "POST", "PUT", "PATCH", "DELETE")))

    # --- what an annotator does in CVAT's editor ------------------------------------------

    def login(self) -> requests.Session:
        http = requests.Session()
        http.post(f"{self.url}/api/auth/login", json={"username": self.username, "password": self.password},
                  timeout=10).raise_for_status()
        return http

    def draw_mask(self, task_id: int, frame: int, mask: np.ndarray, label: str) -> dict:
        """Save ``mask`` (the whole image's size) on image ``frame`` of the task as the brush tool does."""
        return self._create_shape(task_id, {"type": "mask", "frame": frame, "points": cvat_rle(mask)}, label)

    def draw_polygon(self, task_id: int, frame: int, corners: np.ndarray, label: str) -> dict:
        """Save a polygon (``corners`` in pixels, ``[[x, y], ...]``) on image ``frame`` of the task."""
        points = [float(v) for v in np.asarray(corners, dtype=float).ravel()]
        return self._create_shape(task_id, {"type": "polygon", "frame": frame, "points": points}, label)

    def _create_shape(self, task_id: int, shape: dict, label: str) -> dict:
        task = self.tasks[task_id]
        (label_id,) = [lab["id"] for lab in task.labels if lab["name"] == label]
        shape |= {"label_id": label_id, "occluded": False, "outside": False, "z_order": 0, "rotation": 0.0,
                  "group": 0, "source": "manual", "attributes": [], "elements": []}
        body = {"version": task.annotations["version"], "shapes": [shape], "tags": [], "tracks": []}
        response = self.login().patch(f"{self.url}/api/jobs/{task.jobs[0]}/annotations", params={"action": "create"},
                                      json=body, timeout=10)
        response.raise_for_status()
        return response.json()["shapes"][0]

    # --- request handling -------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path, _, query = h.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        body = read_body(h)
        with self._lock:
            self.requests.append((method, path))
            routes = [
                ("POST", r"/api/auth/login", self._login),
                ("GET", r"/api/server/about", lambda *_: (200, {"name": "Computer Vision Annotation Tool",
                                                               "version": VERSION})),
                ("GET", r"/api/tasks", self._list_tasks),
                ("POST", r"/api/tasks", self._create_task),
                ("GET", r"/api/tasks/(\d+)", self._task),
                ("DELETE", r"/api/tasks/(\d+)", self._delete_task),
                ("GET", r"/api/labels", self._labels),
                ("POST", r"/api/tasks/(\d+)/data", self._upload),
                ("GET", r"/api/tasks/(\d+)/data/meta", self._meta),
                ("GET", r"/api/jobs", self._list_jobs),
                ("GET", r"/api/jobs/(\d+)", self._job),
                ("GET", r"/api/tasks/(\d+)/annotations", self._task_annotations),
                ("PUT", r"/api/tasks/(\d+)/annotations", self._task_annotations),
                ("GET", r"/api/jobs/(\d+)/annotations", self._job_annotations),
                ("PUT", r"/api/jobs/(\d+)/annotations", self._job_annotations),
                ("PATCH", r"/api/jobs/(\d+)/annotations", self._job_annotations),
            ]
            found = route(routes, method, path)
            if found is None:
                return reply(h, 404, {"detail": "Not found."})
            if path not in ("/api/auth/login", "/api/server/about") and not self._authorised(h):
                return reply(h, 401, {"detail": "Authentication credentials were not provided."})
            handler, groups = found
            status, payload = handler(h, method, params, body, *(int(g) for g in groups))
            return reply(h, status, payload, self._cookie if path == "/api/auth/login" and status == 200 else ())

    def _authorised(self, h: BaseHTTPRequestHandler) -> bool:
        cookies = dict(c.strip().split("=", 1) for c in h.headers.get("cookie", "").split(";") if "=" in c)
        return cookies.get("sessionid") in self.sessions

    def _login(self, h, method, params, body):
        given = json.loads(body or b"{}")
        if (given.get("username"), given.get("password")) != (self.username, self.password):
            return 400, {"non_field_errors": ["Unable to log in with provided credentials."]}
        session = secrets.token_hex(16)
        self.sessions.add(session)
        self._cookie = f"sessionid={session}; Path=/", f"csrftoken={secrets.token_hex(16)}; Path=/"
        return 200, {"key": secrets.token_hex(20)}

    def _task_json(self, task: Task) -> dict:
        return {"id": task.id, "name": task.name, "status": "annotation", "assignee": None, "updated_date": "",
                "size": len(task.frames), "labels": {"url": f"{self.url}/api/labels?task_id={task.id}"},
                "jobs": {"count": len(task.jobs), "url": f"{self.url}/api/jobs?task_id={task.id}"}}

    def _list_tasks(self, h, method, params, body):
        return 200, _page([self._task_json(t) for t in self.tasks.values()])

    def _create_task(self, h, method, params, body):
        given = json.loads(body)
        labels = [{"id": next(self._ids), "name": lab["name"], "type": "any", "color": "#ff0000",
                   "attributes": [{**a, "id": next(self._ids)} for a in lab.get("attributes", [])]}
                  for lab in given["labels"]]
        task = Task(next(self._ids), given["name"], labels)
        self.tasks[task.id] = task
        return 201, self._task_json(task)

    def _task(self, h, method, params, body, task_id):
        task = self.tasks.get(task_id)
        return (200, self._task_json(task)) if task else (404, {"detail": "Not found."})

    def _delete_task(self, h, method, params, body, task_id):
        task = self.tasks.pop(task_id, None)
        if task is None:
            return 404, {"detail": "Not found."}
        for job in task.jobs:
            self.jobs.pop(job)
        return 204, None

    def _labels(self, h, method, params, body):
        task = self.tasks.get(int(params.get("task_id", 0)))
        return (200, _page(task.labels)) if task else (404, {"detail": "Not found."})

    def _upload(self, h, method, params, body, task_id):
        task = self.tasks[task_id]
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            f"Content-Type: {h.headers['content-type']}\r\n\r\n".encode() + body)
        files = sorted(((part.get_param("name", header="content-disposition"), part) for part in message.iter_parts()
                        if part.get_filename()), key=lambda p: int(re.search(r"\d+", p[0]).group()))
        for _, part in files:
            data = part.get_payload(decode=True)
            width, height = Image.open(io.BytesIO(data)).size
            task.frames.append({"name": part.get_filename(), "width": width, "height": height, "data": data})
        if self.make_jobs:
            job = next(self._ids)
            task.jobs.append(job)
            self.jobs[job] = task_id
        return 202, {"rq_id": f"create:task.id{task_id}"}

    def _meta(self, h, method, params, body, task_id):
        task = self.tasks[task_id]
        frames = [{k: f[k] for k in ("name", "width", "height")} for f in task.frames]
        return 200, {"size": len(frames), "frames": frames, "start_frame": 0, "stop_frame": len(frames) - 1,
                     "frame_filter": "", "image_quality": 75}

    def _job_json(self, job: int) -> dict:
        task = self.tasks[self.jobs[job]]
        return {"id": job, "task_id": task.id, "start_frame": 0, "stop_frame": len(task.frames) - 1,
                "state": "new", "stage": "annotation", "status": "annotation", "assignee": None}

    def _list_jobs(self, h, method, params, body):
        task = self.tasks.get(int(params.get("task_id", 0)))
        return (200, _page([self._job_json(j) for j in task.jobs])) if task else (404, {"detail": "Not found."})

    def _job(self, h, method, params, body, job):
        return (200, self._job_json(job)) if job in self.jobs else (404, {"detail": "Not found."})

    def _task_annotations(self, h, method, params, body, task_id):
        task = self.tasks[task_id]
        if method == "PUT":
            task.annotations = self._with_ids(json.loads(body), task.annotations["version"] + 1)
        return 200, task.annotations

    def _job_annotations(self, h, method, params, body, job):
        task = self.tasks[self.jobs[job]]  # one job holds every image of its task
        if method == "GET":
            return 200, task.annotations
        given = self._with_ids(json.loads(body), task.annotations["version"] + 1)
        if method == "PUT":
            task.annotations = given
            return 200, given
        action = params.get("action")
        for kind in ("shapes", "tags", "tracks"):
            ids = {a["id"] for a in given[kind]}
            kept = [a for a in task.annotations[kind] if a["id"] not in ids or action == "create"]
            task.annotations[kind] = kept + (given[kind] if action in ("create", "update") else [])
        task.annotations["version"] = given["version"]
        return 200, given

    def _with_ids(self, annotations: dict, version: int) -> dict:
        """``annotations`` as CVAT stores them: every shape, tag and track with a server id."""
        stored = {"version": version}
        for kind in ("shapes", "tags", "tracks"):
            stored[kind] = [{**a, "id": a.get("id") or next(self._ids)} for a in annotations.get(kind, [])]
        return stored


def cvat_rle(mask: np.ndarray) -> list[float]:
    """CVAT's ``mask`` shape points for a binary image-sized ``mask``: the run lengths over its
    box (background first, row by row), then the box's inclusive ``left, top, right, bottom``."""
    ys, xs = np.nonzero(mask)
    left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    flat = (mask[top:bottom + 1, left:right + 1] != 0).ravel()
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat[0]:
        runs = [0, *runs]
    return [float(r) for r in runs] + [float(left), float(top), float(right), float(bottom)]


def _page(results: list) -> dict:
    return {"count": len(results), "next": None, "previous": None, "results": results}
