"""The CAI paper's "Utility in IAD" experiment on KolektorSDD, at a CPU budget.

KolektorSDD is the evaluation dataset: train normals = a fixed 80% of its defect-free
images; test = its 52 defective images + the other defect-free ones. Each generator
(CAI-N, CAI-M, CutPaste, NSA, DRAEM-style) makes ``--per-target`` pseudo-anomalies per
training normal (at ``--size``), CAI and DRAEM drawing on the registry view that
excludes KolektorSDD; the same detector (same seed and hyper-parameters) is trained on
each and scored on the real test set. Prints the table, the budget and the wall times;
asserts nothing. With ``--time-metrics`` it also times :func:`evaluate_maps` (all five
metrics, one sort) against scikit-learn's AUROC + AP alone on the same full-resolution maps.

Run: ``python benchmarks/eval_kolektorsdd.py --out /tmp/ksdd-eval [--steps 300 --width 16]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from common import REPO, SOURCE_ROOTS  # noqa: E402  (puts the checkout on sys.path)

import numpy as np  # noqa: E402

from daad.evaluation.sets import kolektorsdd_set  # noqa: E402
from daad.evaluation.harness import evaluate_generated  # noqa: E402
from daad.evaluation.metrics import evaluate_maps  # noqa: E402
from daad.evaluation.protocol import make_generator  # noqa: E402
from daad.evaluation.report import write_report  # noqa: E402
from daad.evaluation.train import TrainConfig, full_resolution_maps  # noqa: E402
from daad.registry import Registry  # noqa: E402
from daad.roots import Roots  # noqa: E402
from daad.synthesis.base import Target  # noqa: E402
from daad.synthesis.output import write_generated  # noqa: E402
from daad.synthesis.targets import resize  # noqa: E402

ROOTS = SOURCE_ROOTS
GENERATORS = ("cai-normal", "cai-mixed", "cutpaste", "nsa-normal", "draem")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generators", nargs="+", default=list(GENERATORS))
    parser.add_argument("--per-target", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--selection", default="val", choices=("val", "test-best"))
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 helps on a crowded machine)")
    parser.add_argument("--time-metrics", action="store_true")
    args = parser.parse_args()
    from daad.synthesis.foreground import ForegroundExtractor

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    evaluation = kolektorsdd_set(ROOTS["kolektorsdd"])
    print(f"KolektorSDD: {len(evaluation.train_normals)} train normals, {len(evaluation.test)} test images "
          f"({len(evaluation.test_anomalies)} defective); loaded in {time.perf_counter() - t0:.1f} s")
    targets = [Target(s.id, resize(s.image, args.size), "CC-BY-NC-SA-4.0") for s in evaluation.train_normals]
    view = Registry(REPO / "manifests", Roots(ROOTS)).view(evaluation="kolektorsdd")
    print(f"registry view leak-free for kolektorsdd: {len(list(view))} real anomalies")

    foreground = ForegroundExtractor()
    folders, gen_seconds = [], {}
    for name in args.generators:
        generator = make_generator(name, args.per_target, foreground)
        t = time.perf_counter()
        summary = write_generated(
            args.out / "generated" / name, generator.generate(targets, view, args.seed), generator=generator.name,
            params=generator.params() | {"size": args.size}, seed=args.seed, evaluation="kolektorsdd",
            total=len(targets) * args.per_target,
        )
        gen_seconds[name] = time.perf_counter() - t
        print(f"{name}: {summary.rows} rows in {gen_seconds[name]:.1f} s")
        folders.append(args.out / "generated" / name)

    config = TrainConfig(size=args.size, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         selection=args.selection, eval_every=args.eval_every, val_fraction=args.val_fraction,
                         base_width=args.width)
    results = evaluate_generated(evaluation, folders, config)
    write_report(args.out / "report", evaluation, config, results)
    print()
    print((args.out / "report" / "report.md").read_text())
    for r in results:
        print(f"{r.generator}: generate {gen_seconds.get(r.generator, float('nan')):.1f} s, "
              f"train + evaluate {r.wall_s:.1f} s, best step {r.best_step}/{r.steps}")
    print(f"budget: {args.size} px, {args.steps} steps x batch {args.batch_size}, lr {args.lr}, UNet width {args.width}, "
          f"selection {args.selection}, seed {args.seed}, {args.per_target} rows per target")
    print(f"total wall time {time.perf_counter() - t0:.1f} s on {os.cpu_count()} CPU cores")

    if args.time_metrics and results:
        from sklearn.metrics import average_precision_score, roc_auc_score

        from daad.evaluation.detector import DiscriminativeUNet  # an untrained map: timing only

        maps = full_resolution_maps(DiscriminativeUNet(base_width=4).eval(), evaluation.test, config)
        masks = [s.mask for s in evaluation.test]
        t = time.perf_counter()
        evaluate_maps(maps, masks)
        ours = time.perf_counter() - t
        scores, truth = np.concatenate([m.ravel() for m in maps]), np.concatenate([m.ravel() for m in masks])
        t = time.perf_counter()
        roc_auc_score(truth, scores), average_precision_score(truth, scores)
        ref = time.perf_counter() - t
        print(f"metrics on {scores.size / 1e6:.1f} M pixels: evaluate_maps (5 metrics) {ours:.1f} s, "
              f"sklearn AUROC + AP {ref:.1f} s, ratio {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
