"""Worker pools are safe in a threaded process: a build and a generator called from a
process with a live FiftyOne (pymongo) client and a busy torch thread pool finish, with
the bytes one process writes, and no worker is a fork of this process; a worker that dies
is an error, not a wait."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest
import torch

from conftest import REPO, SD_ROOT, SHARED_DATA, SOURCE_ROOTS, copy_manifests
from daad.dataset.build import build
from daad.loaders.kolektorsdd import iter_normals
from daad.processes import WorkerError, process_map
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.cai import CAI, CAIConfig
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.parallel import CHUNK, generate_encoded
from daad.synthesis.targets import load_targets
from helpers.curation import shared_session


def _parent_pid(_state, _item) -> int:
    return os.getppid()


def _die(_state, item: int) -> int:
    if item == 3:
        os._exit(1)
    return item


def _open_directories() -> set[str]:
    """The directories this process holds open descriptors of."""
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        target = os.path.realpath(f"/proc/self/fd/{fd}")
        if os.path.isdir(target):
            paths.add(target)
    return paths


@pytest.fixture
def busy_threads():
    """A FiftyOne client talking to its mongod, and torch matmuls on its thread pool, until the test ends."""
    fo = shared_session().fiftyone()
    stop = threading.Event()
    torch.set_num_threads(2)

    def query_database():
        while not stop.is_set():
            fo.list_datasets()

    def multiply():
        a = torch.randn(256, 256)
        while not stop.is_set():
            a = torch.tanh(a @ a)

    threads = [threading.Thread(target=f, daemon=True) for f in (query_database, multiply)]
    for thread in threads:
        thread.start()
    yield threads
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_workers_are_not_forks_of_the_caller(busy_threads):
    assert threading.active_count() >= 3
    parents = set(process_map(_parent_pid, None, range(8), workers=2))
    assert os.getpid() not in parents and len(parents) == 1  # all forked by one clean server


def test_a_dead_worker_raises_instead_of_waiting():
    with pytest.raises(WorkerError, match="worker process died"):
        list(process_map(_die, None, range(8), workers=2))
    assert list(process_map(_die, None, range(3), workers=2)) == [0, 1, 2]  # the next pool starts afresh


def test_build_and_generator_finish_beside_live_threads(busy_threads, tmp_path):
    manifests = copy_manifests(tmp_path / "m", "sd_saliency_900", "crackforest", "kolektorsdd")
    registry = Registry(manifests, Roots(SOURCE_ROOTS))
    outs, directories = [], _open_directories()
    for workers in (1, 2):
        out = tmp_path / f"build{workers}"
        summary = build(registry, out, origins=["sd_saliency_900"], progress=False, workers=workers)
        assert summary.accepted == 895  # 5 published twice are marked duplicate_of
        outs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outs[0] == outs[1]
    assert _open_directories() <= directories  # the roots' descriptors are closed

    view = registry.view(evaluation="kolektorsdd", classes=["crack", "scratch"])
    items = [(n.id, n.path) for n in itertools.islice(iter_normals(SHARED_DATA / "kolektorsdd-yolo"), 2 * CHUNK + 1)]
    targets = list(load_targets(items, 96))
    rows = []
    for workers in (1, 2):
        generator = CAI(CAIConfig(mode="normal", per_target=2), ForegroundExtractor("classical"))
        generator.prepare(view)
        rows.append(list(generate_encoded(generator, targets, seed=5, workers=workers)))
    assert rows[0] == rows[1] and len(rows[0]) > len(targets)
    assert all(thread.is_alive() for thread in busy_threads)
    assert SD_ROOT.is_dir()


def _sleep(_state, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_workers_of_a_killed_owner_exit(tmp_path):
    """kill -9 of the process that started a pool: its workers (and so the forkserver) end too,
    instead of waiting for work forever."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import os, sys\n"
        "from test_processes import _sleep\n"
        "from daad.processes import process_map\n"
        "if __name__ == '__main__':\n"
        "    for _ in process_map(_sleep, None, [0.2] + [60] * 3, workers=2):\n"
        "        print(os.getpid(), flush=True)\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert owner.stdout.readline().strip() == str(owner.pid)  # the pool is running
    workers = [p for p in psutil.Process(owner.pid).children(recursive=True)]
    servers = [p for p in psutil.process_iter(["cmdline"]) if "forkserver" in " ".join(p.info["cmdline"] or [])
               and str(REPO) in " ".join(p.info["cmdline"] or [])]
    watched = [p for p in {*workers, *(c for s in servers for c in s.children(recursive=True))} if p.is_running()]
    assert len(watched) >= 2
    owner.kill()
    owner.wait(timeout=30)
    gone, alive = psutil.wait_procs(watched, timeout=30)
    assert not alive, alive
