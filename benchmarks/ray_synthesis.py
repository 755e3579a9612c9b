"""CAI on Ray next to the local forkserver pool, in the same run: throughput, ratio, overhead per block.

Real data: KolektorSDD normals (read from their files, 256x256) as targets, the registry
view leak-free for KolektorSDD (SD-saliency-900 + CrackForest) as sources, ``cai-normal``.
Every configuration writes the full dataset folder (parts, shards, card) and its output is
checked to be byte-identical to the local pool's. Figures, printed, never asserted:

- local pool: ``daad synth cai --workers C`` (read targets, generate in C forkserver workers, write shards);
- Ray, 1 node of C CPUs and 2 nodes of C/2 CPUs (a ``ray.cluster_utils.Cluster`` on 127.0.0.1):
  images/s and ratio to the local pool;
- overhead per block: a job whose blocks make no rows (task, part file, facts, driver
  bookkeeping), in ms per block;
- the per-image cost on one core, target reads per second on one core, and shard writing
  MB/s on one core: what the README's cluster plan is computed from.

Run: ``PYTHONPATH=. python benchmarks/ray_synthesis.py [--targets 96] [--per-target 4]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep every Ray address on 127.0.0.1

from common import SHARED, SOURCE_ROOTS  # noqa: E402

from daad.distributed.synthesis import blocks_of, synthesise_on_ray, write_on_ray  # noqa: E402
from daad.loaders.kolektorsdd import iter_normals  # noqa: E402
from daad.processes import default_workers  # noqa: E402
from daad.registry.registry import Registry  # noqa: E402
from daad.registry.roots import Roots  # noqa: E402
from daad.synthesis.base import GenerationReport  # noqa: E402
from daad.synthesis.cai import CAI, CAIConfig  # noqa: E402
from daad.synthesis.foreground import ForegroundExtractor  # noqa: E402
from daad.synthesis.output import encode_row, write_generated  # noqa: E402
from daad.synthesis.parallel import generate_encoded  # noqa: E402
from daad.synthesis.targets import TargetFiles, load_targets  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OBJECT_STORE = 200 << 20
SEED = 0


def empty_rows(state, block: range):
    """A block that makes nothing: what is left is Ray's and daad's cost per block."""
    return [], GenerationReport()


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_cai(bank) -> CAI:
    return CAI(CAIConfig(per_target=ARGS.per_target), ForegroundExtractor("classical"), bank)


def params() -> dict:
    return {"per_target": ARGS.per_target, "size": 256}


def local_pool(items, bank, out: Path, workers: int) -> float:
    start = time.perf_counter()
    generator = make_cai(bank)
    targets = list(load_targets(items, 256))
    write_generated(out, generate_encoded(generator, targets, SEED, workers), generator=generator.name,
                    params=generator.params() | params(), seed=SEED, evaluation="kolektorsdd", progress=False)
    return time.perf_counter() - start


def on_ray(items, bank, out: Path, nodes: int, cpus: int) -> tuple[float, float]:
    """Seconds for the CAI job, and ms per block of the empty job, on ``nodes`` nodes of ``cpus`` CPUs."""
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": cpus, "object_store_memory": OBJECT_STORE, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args=node | {"include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(**node)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        warm = ray.remote(lambda: os.getpid()).options(num_cpus=1)
        ray.get([warm.remote() for _ in range(2 * nodes * cpus)])  # start the workers outside the timing
        generator = make_cai(bank)
        start = time.perf_counter()
        synthesise_on_ray(ray, generator, TargetFiles(items, 256), out, seed=SEED, params=generator.params() | params(),
                          evaluation="kolektorsdd", input_licences={}, progress=False)
        seconds = time.perf_counter() - start
        blocks = blocks_of(ARGS.empty_blocks, 1)
        start = time.perf_counter()
        write_on_ray(ray, out.with_name("empty"), empty_rows, None, blocks, name="empty", params={}, seed=0,
                     evaluation="none", input_licences={}, identity={}, progress=False)
        per_block = (time.perf_counter() - start) / len(blocks) * 1000
    finally:
        ray.shutdown()
        cluster.shutdown()
    return seconds, per_block


def one_core_figures(items, bank, work: Path) -> tuple[float, float, float, float]:
    """(ms per image generating, targets read per s, MB/s writing shards, MB per image), each on one core."""
    start = time.perf_counter()
    targets = list(load_targets(items, 256))
    reads = len(targets) / (time.perf_counter() - start)
    generator = make_cai(bank)
    start = time.perf_counter()
    rows = [encode_row(r) for i in range(len(targets)) for r in generator.rows_for(targets, i, SEED)]
    ms = (time.perf_counter() - start) / len(rows) * 1000
    size = sum(len(r.image_png) + len(r.mask_png) for r in rows) / 1e6
    start = time.perf_counter()
    write_generated(work / "write", rows, generator="cai-normal", params={}, seed=SEED, evaluation="none", progress=False)
    return ms, reads, size / (time.perf_counter() - start), size / len(rows)


def main() -> None:
    cpus = max(2, default_workers() // 2 * 2)
    view = Registry(REPO / "manifests", Roots(SOURCE_ROOTS)).view(evaluation="kolektorsdd", origins=list(SOURCE_ROOTS))
    from daad.synthesis.cai import PatternBank

    bank = PatternBank.from_view(view)
    items = [(n.id, n.path) for n in itertools.islice(iter_normals(SHARED / "kolektorsdd-yolo"), ARGS.targets)]
    rows = len(items) * ARGS.per_target
    work = Path(tempfile.mkdtemp(prefix="daad-ray-bench-"))
    try:
        print(f"{len(items)} targets x {ARGS.per_target} = {rows} pseudo-anomalies (256 px, cai-normal, "
              f"{len(bank)} source patterns), {cpus} CPUs in every configuration")
        local = local_pool(items, bank, work / "local", cpus)
        reference = files(work / "local")
        print(f"local forkserver pool, {cpus} workers: {local:6.1f} s  {rows / local:6.1f} img/s  (1.00)")
        for nodes in (1, 2):
            seconds, per_block = on_ray(items, bank, work / f"ray{nodes}" / "out", nodes, cpus // nodes)
            same = files(work / f"ray{nodes}" / "out") == reference
            print(f"Ray, {nodes} node(s) x {cpus // nodes} CPU:    {seconds:6.1f} s  {rows / seconds:6.1f} img/s  "
                  f"({local / seconds:.2f} of the local pool)  overhead {per_block:.1f} ms/block  "
                  f"bytes {'identical' if same else 'DIFFERENT'}")
        ms, reads, write, mb = one_core_figures(items[: min(len(items), 24)], bank, work)
        print(f"one core: {ms:.1f} ms/image generating, {reads:.1f} targets/s reading, {write:.1f} MB/s writing shards "
              f"({mb:.3f} MB/image)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=96)
    parser.add_argument("--per-target", type=int, default=4)
    parser.add_argument("--empty-blocks", type=int, default=64)
    ARGS = parser.parse_args()
    main()
