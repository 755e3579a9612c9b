"""Synthesis speed on real data: CAI (normal, mixed) and the baselines, printed, never asserted.

Targets: KolektorSDD normal images at 256x256. Sources: the registry view leak-free for
KolektorSDD (SD-saliency-900 + CrackForest). Figures:

- core: median ms per image on one core (no file I/O: STM + MAS + ILS + PE + mask for CAI);
- end to end: images/s of what ``daad synth`` runs (decode the targets, synthesise and
  encode PNGs in 2 worker processes, write the shards);
- same-run baselines: CAI with ``cv2.seamlessClone`` as the Poisson solver (``solver=opencv``,
  the authors' choice) next to the DST solver, and ILS with a per-pixel Python loop, as
  the authors' implementation does, next to the array version.

Run: ``python benchmarks/synthesis.py`` (``DAAD_SHARED_DATA`` to point elsewhere than ``../shared/data``).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from common import REPO, SOURCE_ROOTS  # noqa: E402  (puts the checkout on sys.path)

import daad.processes  # noqa: E402
from daad.loaders.kolektorsdd import iter_normals  # noqa: E402
from daad.registry import Registry  # noqa: E402
from daad.registry.roots import Roots  # noqa: E402
from daad.synthesis.baselines.cutpaste import CutPaste, CutPasteConfig  # noqa: E402
from daad.synthesis.baselines.draem import DRAEM, DRAEMConfig, Texture  # noqa: E402
from daad.synthesis.baselines.nsa import NSA, NSAConfig  # noqa: E402
from daad.synthesis.base import per_target_rows  # noqa: E402
from daad.synthesis.cai import CAI, CAIConfig, PatternBank  # noqa: E402
from daad.synthesis.foreground import ForegroundExtractor  # noqa: E402
from daad.synthesis.injection import clone_margin, select_location  # noqa: E402
from daad.synthesis.output import write_generated  # noqa: E402
from daad.synthesis.parallel import generate_encoded  # noqa: E402
from daad.synthesis.targets import load_targets  # noqa: E402

KSDD = SOURCE_ROOTS["kolektorsdd"]
STATE: dict = {}


def make_generator(name: str):
    fg = ForegroundExtractor("classical")
    base, _, solver = name.partition("/")
    return {
        "cai-normal": lambda: CAI(CAIConfig(mode="normal", solver=solver or "dst"), fg, STATE["bank"]),
        "cai-mixed": lambda: CAI(CAIConfig(mode="mixed", solver=solver or "dst"), fg, STATE["bank"]),
        "cutpaste": lambda: CutPaste(CutPasteConfig()),
        "cutpaste-scar": lambda: CutPaste(CutPasteConfig(scar=True)),
        "nsa-normal": lambda: NSA(NSAConfig(mode="normal"), fg),
        "nsa-mixed": lambda: NSA(NSAConfig(mode="mixed"), fg),
        "draem": lambda: DRAEM(DRAEMConfig(), STATE["textures"]),
    }[base]()


def core_ms(name: str, targets) -> tuple[float, int]:
    """Median ms per row over ``targets`` (time between consecutive rows, retries included)."""
    generator = make_generator(name)
    for t in targets:  # foregrounds are cached per target: compute them outside the timing
        if hasattr(generator, "foreground"):
            generator.foreground(t.id, t.image)
    times, rows = [], per_target_rows(generator, targets, 0)
    while True:
        start = time.perf_counter()
        try:
            next(rows)
        except StopIteration:
            break
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(times)


def naive_ils(foreground: np.ndarray, size: tuple[int, int], margin: int, rng: np.random.Generator):
    """ILS the way the authors' implementation does it: a Python loop over every pixel."""
    height, width = foreground.shape
    w, h = size
    candidates = []
    for y in range(height):
        for x in range(width):
            left, top = x - w // 2 - margin, y - h // 2 - margin
            if foreground[y, x] and left >= 0 and top >= 0 and left + w + 2 * margin <= width and top + h + 2 * margin <= height:
                candidates.append((x, y))
    return candidates[rng.integers(len(candidates))] if candidates else None


def end_to_end(name: str, items, workers: int) -> float:
    """Rows/s of decode + synthesise + encode (in ``workers`` processes) + write shards."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        targets = list(load_targets(items, 256))
        generator = make_generator(name)
        rows = write_generated(
            Path(tmp) / "out", generate_encoded(generator, targets, 0, workers),
            generator=generator.name, params={}, seed=0, evaluation="kolektorsdd", progress=False,
        ).rows
        return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core-targets", type=int, default=30)
    parser.add_argument("--e2e-targets", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive-images", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    roots = Roots(SOURCE_ROOTS)
    view = Registry(REPO / "manifests", roots).view(evaluation="kolektorsdd")
    STATE["bank"] = PatternBank.from_view(view)
    STATE["textures"] = [Texture(p.id, partial(np.asarray, p.image), True) for p in STATE["bank"].patterns[::10]]
    normals = list(itertools.islice(iter_normals(KSDD), max(args.core_targets, args.e2e_targets)))
    targets = list(load_targets([(n.id, n.path) for n in normals[: args.core_targets]], 256))
    items = [(n.id, n.path) for n in normals[: args.e2e_targets]]
    print(f"setup: {len(STATE['bank'])} source patterns, {len(normals)} KolektorSDD normals, {time.perf_counter() - t0:.1f} s")

    # same-run baseline: per-pixel ILS loop vs the array version, inside CAI-N
    fg = ForegroundExtractor("classical")
    rng = np.random.default_rng(0)
    naive, vector = [], []
    for t in targets[: args.naive_images]:
        foreground = fg(t.id, t.image)
        size, margin = (120, 60), clone_margin(CAIConfig().dilate_kernel)
        start = time.perf_counter()
        naive_ils(foreground, size, margin, rng)
        naive.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        select_location(foreground, size, margin, rng)
        vector.append((time.perf_counter() - start) * 1000)
    n_ms, v_ms = statistics.median(naive), statistics.median(vector)
    print(f"ILS per draw: per-pixel loop {n_ms:.1f} ms, array {v_ms:.3f} ms ({n_ms / v_ms:.0f}x)")

    print(f"\n{'generator':<18} {'core ms/img (1 core)':>21} {'rows':>6} {'e2e img/s (' + str(args.workers) + ' procs)':>20}")
    core = {}
    for name in ("cai-normal", "cai-mixed", "cai-normal/opencv", "cai-mixed/opencv", "cutpaste", "cutpaste-scar",
                 "nsa-normal", "nsa-mixed", "draem"):
        ms, rows = core_ms(name, targets)
        rate = end_to_end(name, items, args.workers)
        core[name] = ms
        print(f"{name:<18} {ms:>21.2f} {rows:>6} {rate:>20.1f}")
    for mode in ("normal", "mixed"):
        print(f"CAI-{mode[0].upper()}: cv2.seamlessClone solver / DST solver = "
              f"{core[f'cai-{mode}/opencv'] / core[f'cai-{mode}']:.2f}x (median ms per image)")
    forkserver = daad.processes.start_server
    daad.processes.start_server = lambda modules: multiprocessing.get_context("fork")  # the start method daad used before
    forked = end_to_end("cai-normal", items, args.workers)
    daad.processes.start_server = forkserver
    clean = end_to_end("cai-normal", items, args.workers)
    print(f"start method, cai-normal e2e: fork workers {forked:.1f} img/s, forkserver workers {clean:.1f} img/s "
          f"(forkserver / fork = {clean / forked:.2f})")
    cai_ms = core["cai-normal"]
    print(f"CAI-N with the per-pixel ILS loop would take about {cai_ms + n_ms:.1f} ms/img "
          f"({(cai_ms + n_ms) / cai_ms:.1f}x the array version)")


if __name__ == "__main__":
    main()
