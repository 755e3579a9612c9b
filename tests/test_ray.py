"""Ray: a real two-node cluster on 127.0.0.1 (head + one worker node, one CPU each), real CAI
over real KolektorSDD normals, a worker and a driver killed by PID; every output compared
byte for byte with one local process, and every Ray process gone at the end."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: every address on 127.0.0.1

from conftest import REPO, SHARED_DATA, SOURCE_ROOTS, copy_manifests  # noqa: E402
from daad.cli import app  # noqa: E402
from daad.distributed.runs import ray_executor  # noqa: E402
from daad.distributed.synthesis import StagingMismatchError, blocks_of, staging_folder, write_on_ray  # noqa: E402
from daad.loaders.kolektorsdd import iter_normals  # noqa: E402
from daad.registry.registry import Registry  # noqa: E402
from daad.registry.roots import Roots  # noqa: E402
from daad.synthesis.cai import CAI, CAIConfig  # noqa: E402
from daad.synthesis.foreground import ForegroundExtractor  # noqa: E402
from daad.synthesis.output import write_generated  # noqa: E402
from daad.synthesis.parallel import generate_encoded  # noqa: E402
from daad.synthesis.targets import TargetFiles  # noqa: E402
from tests.helpers.ray_jobs import slow_rows, square  # noqa: E402

TARGETS = 36
SEED = 3
ROWS_PER_SHARD = 16
"""Small shards, so blocks straddle shard boundaries."""
BLOCK = 4
NODE = {"num_cpus": 1, "object_store_memory": 200 << 20, "node_ip_address": "127.0.0.1"}
"""One CPU and a small object store a node (the pattern bank CAI hands the workers is ~45 MB)."""
KSDD = SHARED_DATA / "kolektorsdd-yolo"


@pytest.fixture(scope="module")
def cluster():
    """Head + one worker node; on teardown, every process it started (by PID) must end."""
    import ray
    from ray.cluster_utils import Cluster

    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = Cluster(initialize_head=True, head_node_args=NODE | {"include_dashboard": False})
    cluster.add_node(**NODE)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        started = {p.pid for p in psutil.Process().children(recursive=True)} - ours
        ray.shutdown()
        cluster.shutdown()
        left = _wait_gone(started, 30)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"Ray processes left after shutdown: {left}"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    return copy_manifests(tmp_path_factory.mktemp("m"), "sd_saliency_900", "crackforest", "kolektorsdd")


@pytest.fixture(scope="module")
def target_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("targets")
    for normal in itertools.islice(iter_normals(KSDD), TARGETS):
        shutil.copy(normal.path, folder / normal.path.name)
    return folder


@pytest.fixture(scope="module")
def job(manifests, target_folder):
    """A CAI job over the real targets, as keyword arguments of ``write_on_ray``."""
    from daad.synthesis.targets import folder_items

    view = Registry(manifests, Roots(SOURCE_ROOTS)).view(evaluation="kolektorsdd", classes=["crack", "scratch"])
    generator = CAI(CAIConfig(per_target=2), ForegroundExtractor("classical"))
    generator.prepare(view)
    targets = TargetFiles(folder_items(target_folder), 128)
    return dict(
        function=slow_rows, state=(generator, targets, SEED), blocks=blocks_of(len(targets), BLOCK),
        name=generator.name, params=generator.params(), seed=SEED, evaluation="kolektorsdd",
        input_licences={p.id: p.licence for p in generator.bank.patterns}, identity={"targets": targets.items},
        rows_per_shard=ROWS_PER_SHARD, progress=False, stall_s=60,
    )


@pytest.fixture(scope="module")
def local(job, tmp_path_factory):
    """The same job written by one local process."""
    generator, targets, seed = job["state"]
    out = tmp_path_factory.mktemp("local") / "out"
    write_generated(
        out, generate_encoded(generator, targets[:], seed), generator=job["name"], params=job["params"], seed=seed,
        evaluation=job["evaluation"], input_licences=job["input_licences"], progress=False,
        rows_per_shard=ROWS_PER_SHARD,
    )
    return files(out)


def test_cli_cai_on_two_nodes_writes_the_bytes_of_a_local_run(cluster, manifests, target_folder, tmp_path):
    outputs = {}
    for mode, extra in (("local", ["--workers", "1"]), ("ray", ["--ray", cluster.address])):
        out = tmp_path / mode
        result = CliRunner().invoke(app, [
            "synth", "cai", "--targets", str(target_folder), "--eval", "kolektorsdd", "--classes", "crack,scratch",
            "--per-target", "2", "--size", "128", "--foreground", "classical", "--out", str(out), "-q",
            "--preview", str(tmp_path / f"{mode}.png"),
            "--manifests", str(manifests), *(a for o, p in SOURCE_ROOTS.items() for a in ("--root", f"{o}={p}")), *extra,
        ])
        assert result.exit_code == 0, result.output
        outputs[mode] = files(out)
    assert "(Ray, 3 blocks)" in " ".join(result.output.split())
    assert outputs["ray"] == outputs["local"] and len(outputs["local"]) == 3
    # the contact sheet of rows that never passed through the driver: read back, the same picture
    assert (tmp_path / "ray.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    assert not staging_folder(tmp_path / "ray").exists()


def test_a_worker_killed_mid_job_is_retried_and_the_bytes_do_not_change(cluster, job, local, tmp_path):
    import ray

    with Killer("ray::daad-generate") as killer:
        result = write_on_ray(ray, tmp_path / "out", **job)
    assert killer.killed, "no generation task was seen running"
    assert len(killer.raylets) == 2, "the generation tasks did not run on both nodes"
    assert files(tmp_path / "out") == local and sum(1 for f in local if f.startswith("data/")) >= 3
    assert result.blocks_made == result.blocks == TARGETS // BLOCK
    assert result.report.rows == result.summary.rows == json.loads(local["generator.json"])["rows"]


def test_a_lost_driver_leaves_its_shards_and_a_rerun_makes_only_the_rest(cluster, job, local, tmp_path):
    import ray

    out = tmp_path / "out"
    staging = staging_folder(out)
    call = tmp_path / "call.pickle"
    call.write_bytes(pickle.dumps(job | {"out": out}))
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.ray_jobs", str(call), cluster.address], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (staging / "shards" / "00000" / "shard.json").is_file():
            assert driver.poll() is None, "the driver ended before it wrote a shard"
            assert time.monotonic() < deadline, "no shard written in 120 s"
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(timeout=30)
    assert not out.exists()
    left = sorted(p.relative_to(staging) for p in staging.rglob("*"))

    with pytest.raises(StagingMismatchError):  # another command refuses to touch the unfinished job
        write_on_ray(ray, out, **job | {"seed": SEED + 1})
    assert sorted(p.relative_to(staging) for p in staging.rglob("*")) == left and not out.exists()

    result = write_on_ray(ray, out, **job)
    assert files(out) == local
    assert 0 < result.blocks_made < result.blocks and result.shards_resumed >= 1
    assert not staging.exists()


@pytest.mark.usefixtures("one_torch_thread")  # as a Ray CPU task runs torch (OMP_NUM_THREADS=1)
def test_cdm_sampling_split_across_workers_gives_the_rows_of_one_process(cluster, cdm_checkpoint, tmp_path):
    import ray

    from daad.distributed.sampling import sample_cdm_on_ray
    from daad.synthesis.cdm.sample import SampleConfig
    from daad.synthesis.targets import folder_items

    folder = cdm_checkpoint.parent / "targets"
    args = ["--per-target", "3", "--inference-steps", "2", "--batch-size", "4", "--size", "64", "--foreground", "classical", "--seed", "5"]
    result = CliRunner().invoke(app, [
        "synth", "cdm", "sample", "--checkpoint", str(cdm_checkpoint), "--targets", str(folder),
        "--out", str(tmp_path / "local"), "-q", *args,
    ])
    assert result.exit_code == 0, result.output
    config = SampleConfig(checkpoint=cdm_checkpoint, per_target=3, steps=2, batch_size=4, foreground="classical")
    done = sample_cdm_on_ray(ray, config, TargetFiles(folder_items(folder), 64), tmp_path / "ray", seed=5, size=64,
                             progress=False, block=4)
    assert done.blocks == 2 and done.summary.rows == 24
    assert files(tmp_path / "ray") == files(tmp_path / "local")


@pytest.mark.usefixtures("one_torch_thread")
def test_dualanodiff_sampling_split_across_workers_gives_the_rows_of_one_process(cluster, dualanodiff_checkpoint, tmp_path):
    import ray

    from daad.distributed.sampling import sample_dualanodiff_on_ray
    from daad.synthesis.dualanodiff.sample import SampleConfig, sample
    from tests.conftest import SD_ROOT

    items = [(f"sd_saliency_900/{n}", SD_ROOT / "Source Images" / f"{n}.bmp") for n in ("In_1", "Pa_1", "Sc_9")]
    targets = TargetFiles(items, 64, "LicenseRef-research")
    config = SampleConfig(dualanodiff_checkpoint, tmp_path / "local", num_pairs=5, num_inference_steps=2, batch_size=2,
                          seed=4, foreground="classical", progress=False)
    summary, skipped = sample(config, targets[:])
    config.output_dir = tmp_path / "ray"
    done, skipped_ray = sample_dualanodiff_on_ray(ray, config, targets, block=2)
    assert done.blocks == 3 and summary.rows > 0 and (done.summary.rows, skipped_ray) == (summary.rows, skipped)
    assert files(tmp_path / "ray") == files(tmp_path / "local")


def test_the_sweep_executor_reruns_a_killed_worker_and_reports_a_failed_run(cluster, tmp_path):
    import ray

    marks = tmp_path / "marks"
    specs = [{"x": x, "marks": str(marks), "wait": 1.0} for x in (1, 2, 3, -4)]
    with Killer("ray::daad-run") as killer:
        rows = list(ray_executor(ray, progress=False)(square, specs))
    assert killer.killed, "no run was seen running"
    assert sorted(r["square"] for r in rows if "square" in r) == [1, 4, 9]
    failed = [r for r in rows if "error" in r]
    assert len(failed) == 1 and "negative x: -4" in failed[0]["error"]
    assert len({m.name.partition("-")[0] for m in marks.iterdir()}) == 4  # every spec ran, the killed one again


def test_daad_protocol_on_ray_fills_the_table_of_a_local_sweep(cluster, tmp_path):
    """One run made locally, then the sweep on Ray: the cluster runs only the missing run and its row lands
    in the same results.csv; run again, nothing is redone."""
    import csv

    from helpers.fake_datasets import write_mvtec_ad

    mvtec = tmp_path / "mvtec_ad"
    write_mvtec_ad(mvtec)
    args = ["protocol", "--eval", "mvtec_ad", "--root", f"mvtec_ad={mvtec}", "--generator", "cutpaste",
            "--per-target", "2", "--size", "32", "--epochs", "0", "--steps", "2", "--eval-every", "2", "--batch-size", "2",
            "--width", "4", "--device", "cpu", "--precision", "fp32", "--selection", "test-best", "--out", str(tmp_path / "o"), "-q"]
    local = CliRunner().invoke(app, [*args, "--category", "bottle"])
    assert local.exit_code == 0 and "ran 1, already done 0" in local.output, local.output
    on_ray = CliRunner().invoke(app, [*args, "--category", "bottle", "--category", "cable", "--ray", cluster.address])
    assert on_ray.exit_code == 0 and "ran 1, already done 1, failed 0" in on_ray.output, on_ray.output
    rows = list(csv.DictReader(open(tmp_path / "o" / "results.csv", newline="")))
    assert [(r["category"], r["generator"]) for r in rows] == [("bottle", "cutpaste"), ("cable", "cutpaste")]
    assert all(0 <= float(r["pixel_ap"]) <= 1 for r in rows)
    again = CliRunner().invoke(app, [*args, "--category", "bottle", "--category", "cable", "--ray", cluster.address])
    assert again.exit_code == 0 and "ran 0, already done 2" in again.output


@pytest.fixture(scope="module")
def cdm_checkpoint(tmp_path_factory):
    """A tiny CDM trained on real CAI output (as tests/test_cdm.py trains it), and eight target files."""
    import cv2

    from tests.helpers.tiny_sd import build_tiny_sd
    from tests.test_cdm import config, kolektor_targets, make_cai_dataset
    from daad.synthesis.cdm.train import train

    root = tmp_path_factory.mktemp("cdm")
    make_cai_dataset(root)
    build_tiny_sd(root / "sd")
    train(config(root, root / "ckpt"), progress=False)
    (root / "targets").mkdir()
    for t in kolektor_targets(8, skip=30):
        cv2.imwrite(str(root / "targets" / f"{Path(t.id).name}.png"), t.image)
    return root / "ckpt"


@pytest.fixture(scope="module")
def dualanodiff_checkpoint(tmp_path_factory):
    """A tiny DualAnoDiff trained on three real scratches (as tests/test_dualanodiff.py trains it)."""
    from tests.helpers.tiny_sd import build_tiny_sd
    from tests.test_dualanodiff import NAMES, real_pair, train_config
    from daad.synthesis.dualanodiff.train import train

    root = tmp_path_factory.mktemp("dad")
    build_tiny_sd(root / "sd")
    return train(train_config(root / "sd", root / "model"), [real_pair(n) for n in NAMES]).output_dir


class Killer:
    """Kills (SIGKILL, by PID) the first process whose title starts with ``title`` once it has
    run a little, and records the raylets (nodes) whose workers ran such tasks."""

    def __init__(self, title: str, after_s: float = 0.2) -> None:
        self.title, self.after_s = title, after_s
        self.killed: list[int] = []
        self.raylets: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        seen: dict[int, float] = {}
        while not self._stop.wait(0.05):
            for p in psutil.Process().children(recursive=True):  # only the processes this test started
                try:
                    cmdline, ppid = p.cmdline(), p.ppid()
                except psutil.Error:
                    continue
                if not (cmdline and cmdline[0].startswith(self.title)):
                    continue
                self.raylets.add(ppid)
                first = seen.setdefault(p.pid, time.monotonic())
                if not self.killed and time.monotonic() - first > self.after_s:
                    os.kill(p.pid, signal.SIGKILL)
                    self.killed.append(p.pid)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _wait_gone(pids: set[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return sorted(left)
        time.sleep(0.2)
