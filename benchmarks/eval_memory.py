"""Speed and memory of the evaluation loop on real KolektorSDD, each figure next to its baseline.

- Training step: daad's detector step (``train_detector``: batch drawn from the stacked training
  set, focal loss, Adam) against the bare step floor (the same UNet, loss and optimiser on one
  in-memory random batch), in fp32 and in bf16 (autocast + channels_last), timed alternately in
  one process ``--repeats`` times, the fastest of each kept. Steps/s and the ratio daad / bare.
- Scoring: peak RSS added by :func:`evaluate_maps` (all five metrics) on the full-resolution
  maps of the test set, per test pixel, against scikit-learn's AUROC + AP on the same maps.
- A whole evaluation (load the set, load the generated rows, train, score, write the report),
  each in a fresh process: its peak RSS (``ru_maxrss``), the issue's target being under 2 GB.

The generated set is CutPaste's (``--per-target`` rows per training normal at ``--size``), written
once under ``--out``. Asserts nothing; prints one table.

Run: ``python benchmarks/eval_memory.py --out /tmp/eval-memory [--size 256 --width 64 --steps 4]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from common import SOURCE_ROOTS  # noqa: E402  (puts the checkout on sys.path)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bare_step(size: int, width: int, batch: int, steps: int, precision: str, threads: int) -> float:
    """Seconds per step of the UNet alone on one in-memory batch (the floor)."""
    import torch

    from daad.evaluation.detector import DiscriminativeUNet, focal_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DiscriminativeUNet(base_width=width)
    x, y = torch.rand(batch, 3, size, size), (torch.rand(batch, size, size) > 0.95).long()
    if precision == "bf16":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        loss = focal_loss(logits.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / steps


def whole_evaluation(generated: str, size: int, width: int, batch: int, steps: int, precision: str, threads: int,
                     out: str) -> dict:
    """One complete evaluation in this (fresh) process: its peak RSS and where the time went."""
    import torch

    from daad.evaluation.harness import evaluate_generated
    from daad.evaluation.report import write_report
    from daad.evaluation.sets import kolektorsdd_set
    from daad.evaluation.train import TrainConfig

    torch.set_num_threads(threads)
    start_mb = _rss_mb()
    t = time.perf_counter()
    evaluation = kolektorsdd_set(SOURCE_ROOTS["kolektorsdd"])
    load_s, set_mb = time.perf_counter() - t, _current_mb()
    config = TrainConfig(size=size, steps=steps, batch_size=batch, eval_every=steps, base_width=width, device="cpu",
                         progress=False, precision=precision, selection="test-best")
    t = time.perf_counter()
    (result,) = evaluate_generated(evaluation, [Path(generated)], config, keep_maps=False)
    write_report(Path(out), evaluation, config, [result])
    return {"start_mb": start_mb, "set_mb": set_mb, "peak_mb": _rss_mb(), "load_s": load_s,
            "evaluate_s": time.perf_counter() - t, "test_mpx": sum(s.mask.size for s in evaluation.test) / 1e6,
            "pixel_ap": result.metrics.pixel_ap, "wall_s": result.wall_s}


def step_times(generated: str, size: int, width: int, batch: int, steps: int, precision: str, threads: int,
               repeats: int) -> tuple[float, float]:
    """Seconds per step of the bare step and of daad's training loop on the real training set, measured
    alternately in this process ``repeats`` times (the fastest of each: the machine is shared)."""
    import torch

    from daad.evaluation.data import load_generated
    from daad.evaluation.sets import kolektorsdd_set
    from daad.evaluation.train import TrainConfig, train_detector

    torch.set_num_threads(threads)
    evaluation = kolektorsdd_set(SOURCE_ROOTS["kolektorsdd"])
    rows = load_generated(Path(generated), {s.id for s in evaluation.train_normals}).samples
    few = evaluation.test_anomalies[:2] + evaluation.test[-2:]
    bare, ours = [], []
    for _ in range(repeats):
        bare.append(bare_step(size, width, batch, steps, precision, threads))
        timed = {}
        for n in (1, steps + 1):  # the difference removes stacking, the warm-up step and selection
            config = TrainConfig(size=size, steps=n, batch_size=batch, eval_every=n, base_width=width, device="cpu",
                                 progress=False, precision=precision, selection="test-best")
            t = time.perf_counter()
            train_detector(evaluation.train_normals, rows, few, config)
            timed[n] = time.perf_counter() - t
        ours.append((timed[steps + 1] - timed[1]) / steps)
    return min(bare), min(ours)


def scoring(threads: int, width: int, size: int) -> dict:
    """Peak RSS added by evaluate_maps and by sklearn AUROC + AP on the same full-resolution maps."""
    import torch

    from daad.evaluation.detector import DiscriminativeUNet
    from daad.evaluation.sets import kolektorsdd_set
    from daad.evaluation.train import TrainConfig, full_resolution_maps

    torch.set_num_threads(threads)
    evaluation = kolektorsdd_set(SOURCE_ROOTS["kolektorsdd"])
    torch.manual_seed(0)
    config = TrainConfig(size=size, base_width=width, device="cpu", progress=False, precision="fp32")
    maps = full_resolution_maps(DiscriminativeUNet(base_width=width).eval(), evaluation.test, config)
    masks = [s.mask for s in evaluation.test]
    pixels = sum(m.size for m in maps)
    out = {"mpx": pixels / 1e6}
    for name in ("evaluate_maps", "sklearn"):
        with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:  # this process is single-threaded here
            out[name] = pool.submit(_score_child, name, maps, masks).result()
        out[name]["bytes_per_px"] = out[name]["added_mb"] * 2**20 / pixels
    return out


class PeakSampler:
    """The highest current RSS seen every 5 ms while the block runs (a forked child's ru_maxrss may
    carry its parent's peak)."""

    def __enter__(self) -> PeakSampler:
        import threading

        self.before = self.peak = _current_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _current_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_mb())


def _score_child(name: str, maps, masks) -> dict:
    import numpy as np

    with PeakSampler() as memory:
        t = time.perf_counter()
        value = _score(name, maps, masks, np)
        seconds = time.perf_counter() - t
    return {"s": seconds, "added_mb": memory.peak - memory.before, "pixel_ap": float(value)}


def _score(name: str, maps, masks, np) -> float:
    if name == "evaluate_maps":
        from daad.evaluation.metrics import evaluate_maps

        return evaluate_maps(maps, masks).pixel_ap
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([np.asarray(g).ravel() for g in masks])
    roc_auc_score(truth, scores)
    return average_precision_score(truth, scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--per-target", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="bare and daad steps timed alternately, fastest kept")
    args = parser.parse_args()

    from daad.evaluation.data import as_rgb
    from daad.evaluation.protocol import make_generator
    from daad.evaluation.sets import kolektorsdd_set
    from daad.synthesis.base import Target
    from daad.synthesis.output import PARAMS_FILE, write_generated
    from daad.synthesis.parallel import generate_encoded
    from daad.synthesis.targets import resize

    generated = args.out / f"cutpaste-{args.size}-{args.per_target}"
    if not (generated / PARAMS_FILE).is_file():
        evaluation = kolektorsdd_set(SOURCE_ROOTS["kolektorsdd"])
        targets = [Target(s.id, resize(as_rgb(s.image), args.size), "CC-BY-NC-SA-4.0") for s in evaluation.train_normals]
        del evaluation
        generator = make_generator("cutpaste", args.per_target)
        t = time.perf_counter()
        write_generated(generated, generate_encoded(generator, targets, 0, 1), generator="cutpaste", params={},
                        seed=0, evaluation="kolektorsdd", progress=False)
        print(f"generated {len(targets) * args.per_target} CutPaste rows in {time.perf_counter() - t:.0f} s")

    budget = (args.size, args.width, args.batch_size, args.steps)
    print(f"budget: {args.size} px, UNet width {args.width}, batch {args.batch_size}, {args.threads} torch threads, "
          f"{os.cpu_count()} cores")
    spawn = get_context("spawn")
    for precision in ("fp32", "bf16"):
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            bare, ours = pool.submit(step_times, str(generated), *budget, precision, args.threads, args.repeats).result()
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            whole = pool.submit(whole_evaluation, str(generated), *budget, precision, args.threads,
                                str(args.out / f"report-{precision}")).result()
        print(f"{precision}: bare step {bare * 1e3:.0f} ms ({1 / bare:.2f} steps/s), daad step {ours * 1e3:.0f} ms "
              f"({1 / ours:.2f} steps/s), daad/bare {ours / bare:.2f}; whole evaluation ({args.steps} steps): peak RSS "
              f"{whole['peak_mb']:.0f} MB (interpreter + imports {whole['start_mb']:.0f} MB, after loading the set "
              f"{whole['set_mb']:.0f} MB), {whole['test_mpx']:.1f} Mpx scored, load {whole['load_s']:.0f} s, "
              f"train + score {whole['evaluate_s']:.0f} s, pixel AP {whole['pixel_ap']:.3f}")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        score = pool.submit(scoring, args.threads, args.width, args.size).result()
    for name in ("evaluate_maps", "sklearn"):
        s = score[name]
        print(f"scoring {score['mpx']:.1f} Mpx with {name}: {s['s']:.1f} s, peak RSS added {s['added_mb']:.0f} MB "
              f"({s['bytes_per_px']:.1f} bytes per test pixel), pixel AP {s['pixel_ap']:.4f}")


if __name__ == "__main__":
    main()
