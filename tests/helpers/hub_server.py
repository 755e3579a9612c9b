"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints ``huggingface_hub``
calls to create a dataset repo and commit files to it through LFS (repo create, repo
settings, README YAML validation, preupload, LFS batch, upload, verify, commit), storing
what it receives."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import yaml

from helpers.loopback import LoopbackServer, dispatching, read_body, reply, route


REGULAR = (".md", ".json")
"""Files the stand-in takes inline in the commit (as the Hub does for small text); the rest go through LFS."""


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[list[str]] = field(default_factory=list)


class HubServer(LoopbackServer):
    """A threaded HTTP server answering the Hub's write endpoints for dataset repos."""

    def __init__(self, token: str = "hf_test_token", namespace: str = "tester") -> None:
        self.token = token
        self.namespace = namespace
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_commit: int | None = None
        """0-based index of the commit to refuse with 403 (None: accept all)."""
        self.stall: set[str] = set()
        """Path prefixes whose requests get no answer until close."""
        self._commits = 0
        self._lock = threading.Lock()
        LoopbackServer.__init__(self, dispatching(self._handle, ("GET", "POST", "PUT")))

    # --- request handling -------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        body = read_body(h)
        with self._lock:
            self.requests.append((method, path))
        if any(path.startswith(p) for p in self.stall):
            self.release.wait(60)
            return
        if not path.startswith("/lfs-") and h.headers.get("authorization") != f"Bearer {self.token}":
            return reply(h, 401, {"error": "Invalid credentials in Authorization header"})
        routes = [
            ("POST", r"/api/repos/create", self._create),
            ("PUT", r"/api/datasets/([^/]+/[^/]+)/settings", self._settings),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", r"/api/datasets/([^/]+/[^/]+)/preupload/[^/]+", self._preupload),
            ("POST", r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/lfs-upload/([0-9a-f]{64})", self._lfs_upload),
            ("POST", r"/lfs-verify", self._lfs_verify),
            ("POST", r"/api/datasets/([^/]+/[^/]+)/commit/[^/]+", self._commit),
        ]
        found = route(routes, method, path)
        if found is None:
            return reply(h, 404, {"error": f"no route {method} {path}"})
        handler, groups = found
        reply(h, *handler(body, *groups))

    def _create(self, body: bytes):
        payload = json.loads(body)
        repo_id = f"{payload.get('organization') or self.namespace}/{payload['name']}"
        if payload.get("type") != "dataset":
            return 400, {"error": f"expected a dataset repo, got {payload.get('type')!r}"}
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": f"{self.url}/datasets/{repo_id}"}
            self.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        return 200, {"url": f"{self.url}/datasets/{repo_id}", "name": repo_id}

    def _settings(self, body: bytes, repo_id: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}
        visibility = json.loads(body).get("visibility")
        if visibility is not None:
            repo.private = visibility == "private"
        return 200, {}

    def _validate_yaml(self, body: bytes):
        content = json.loads(body)["content"]
        _, front, _ = content.split("---\n", 2)
        try:
            yaml.safe_load(front)
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": str(exc)}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def _preupload(self, body: bytes, repo_id: str):
        if repo_id not in self.repos:
            return 404, {"error": "Repository not found"}
        files = json.loads(body)["files"]
        return 200, {"files": [
            {"path": f["path"], "uploadMode": "regular" if f["path"].endswith(REGULAR) else "lfs", "shouldIgnore": False}
            for f in files
        ]}

    def _lfs_batch(self, body: bytes, repo_id: str):
        payload = json.loads(body)
        objects = [
            {"oid": o["oid"], "size": o["size"], "actions": {
                "upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"},
                "verify": {"href": f"{self.url}/lfs-verify"},
            }}
            for o in payload["objects"]
        ]
        return 200, {"transfer": "basic", "objects": objects}

    def _lfs_upload(self, body: bytes, oid: str):
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "sha256 of the body is not the oid"}
        with self._lock:
            self.blobs[oid] = body
        return 200, {}

    def _lfs_verify(self, body: bytes):
        payload = json.loads(body)
        blob = self.blobs.get(payload["oid"])
        return (200, {}) if blob is not None and len(blob) == payload["size"] else (404, {"error": "object not found"})

    def _commit(self, body: bytes, repo_id: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}
        with self._lock:
            index, self._commits = self._commits, self._commits + 1
        if index == self.fail_commit:
            return 403, {"error": "You don't have the rights to push to this repo"}
        files = {}
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                blob = self.blobs.get(value["oid"])
                if blob is None or len(blob) != value["size"]:
                    return 422, {"error": f"LFS object of {value['path']} was not uploaded"}
                files[value["path"]] = blob
        with self._lock:
            repo.files.update(files)
            repo.commits.append(sorted(files))
        oid = hashlib.sha1(body).hexdigest()
        return 200, {"commitUrl": f"{self.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid}
