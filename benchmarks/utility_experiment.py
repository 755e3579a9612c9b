"""The CAI paper's utility experiment (§4.1, Table 1) on KolektorSDD and on an MVTec-layout fake.

Datasets: KolektorSDD (the shared real data: a seeded 80 % of its normals trains, its 52
defective images and the other normals score) and one MVTec-layout category of smooth textures
with learnable scratches and stains (``tests/helpers/fake_datasets.py``), written under ``--out``.
Generators: CAI-N and CAI-M, each with both mask rules (``pattern``, and ``paper``: Eq. 4) and with the
pattern rule at threshold 30 (``-t30``, see ``cai_diagnosis.py``), CutPaste,
NSA, DRAEM; every run has the same detector, seed and budget (``daad.evaluation.protocol``), and
CAI and DRAEM draw their real anomalies from the registry view that excludes the dataset.
The sweep writes ``results.csv`` / ``results.md`` as runs finish and skips finished runs when run
again. ``curves.png`` shows each run's learning curve (pixel AP on the test set at model
resolution, at every check), so a reader can see whether the ranking has settled.

The script runs unchanged on a CUDA machine (``--device auto``, ``--precision auto``); ``--paper``
sets the paper's budget: 256 px, UNet width 64, 200 epochs, the best of them on the test set.

Run: ``python benchmarks/utility_experiment.py --out /tmp/utility [--steps 300 --size 128 --width 16]``
or ``python benchmarks/utility_experiment.py --out /data/utility --paper`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import REPO, SOURCE_ROOTS  # noqa: E402  (puts the checkout on sys.path)

sys.path.insert(0, str(REPO / "tests"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from daad.evaluation.protocol import RunSpec, sweep  # noqa: E402
from daad.evaluation.train import TrainConfig  # noqa: E402
from helpers.fake_datasets import write_textured_mvtec_category  # noqa: E402

GENERATORS = ("cai-normal", "cai-mixed", "cai-normal-paper", "cai-mixed-paper", "cai-normal-t30", "cai-mixed-t30",
              "cutpaste", "nsa-normal", "draem")
FAKE_CATEGORY = "textures"


def experiment_parser(description: str = __doc__.splitlines()[0]) -> argparse.ArgumentParser:
    """The experiment's options (shared with ``cai_diagnosis.py``, which reads the same runs)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generators", nargs="+", default=list(GENERATORS))
    parser.add_argument("--datasets", nargs="+", default=["kolektorsdd", "mvtec-layout"])
    parser.add_argument("--per-target", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--selection", default="val", choices=("val", "test-best"))
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="generator processes per run")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--paper", action="store_true", help="256 px, width 64, 200 epochs, lr 1e-4, test-best")
    return parser


def experiment_specs(args: argparse.Namespace) -> list[RunSpec]:
    """One run per (dataset, generator) at the options' budget; writes the fake dataset under ``--out`` once."""
    if args.paper:
        args.size, args.width, args.epochs, args.lr, args.selection, args.eval_every = 256, 64, 200, 1e-4, "test-best", 500
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    fake = args.out / "mvtec-layout" / FAKE_CATEGORY
    if not (fake / "train").is_dir():
        write_textured_mvtec_category(fake, seed=0, size=256, train=40, test=10)
    roots = {"kolektorsdd": SOURCE_ROOTS["kolektorsdd"], "mvtec-layout": fake}
    config = TrainConfig(size=args.size, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, selection=args.selection, eval_every=args.eval_every, base_width=args.width,
                         device=args.device, precision=args.precision, progress=False, test_curve=True)
    return [RunSpec(g, d, str(roots[d]), "", str(args.out), config, args.per_target, args.seed,
                    roots=tuple((k, str(v)) for k, v in SOURCE_ROOTS.items()), foreground="auto", workers=args.workers)
            for d in args.datasets for g in args.generators]


def main() -> None:
    args = experiment_parser().parse_args()
    specs = experiment_specs(args)
    config = specs[0].train
    print(f"budget: {args.size} px, {args.epochs or 0} epochs / {args.steps} steps x batch {args.batch_size}, lr {args.lr}, "
          f"UNet width {args.width}, selection {args.selection}, precision {config.precision}, seed {args.seed}, "
          f"{args.per_target} rows per target; {len(specs)} runs")
    t0 = time.perf_counter()

    def progress(row: dict) -> None:
        if "error" in row:
            print(f"{row['key']}: FAILED {row['error']}", flush=True)
        else:
            print(f"{row['key']}: AP {row['pixel_ap']:.3f} AUROC {row['pixel_auroc']:.3f} PRO {row['pro']:.3f} "
                  f"best step {row['best_step']}/{row['steps']} ({row['wall_s']} s)", flush=True)

    table, failed = sweep(specs, args.out, on_row=progress)
    plot_learning_curves(args.out / "curves.png", specs)
    print()
    print((args.out / "results.md").read_text())
    print(f"{len(table.rows)} runs in the table, {len(failed)} failed; {time.perf_counter() - t0:.0f} s this time "
          f"on {os.cpu_count()} CPU cores; learning curves: {args.out / 'curves.png'}")


def plot_learning_curves(path: Path, specs: list[RunSpec]) -> None:
    """Per dataset: each generator's test pixel AP (model resolution) at every check."""
    datasets = sorted({s.dataset for s in specs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for spec in (s for s in specs if s.dataset == dataset):
            report = spec.folder / "report" / "report.json"
            if not report.is_file():
                continue
            history = json.loads(report.read_text())["results"][0]["history"]
            ax.plot([h["step"] for h in history], [h.get("test_ap", h["selection_ap"]) for h in history], label=spec.generator)
        ax.set(title=f"{dataset}: test pixel AP while training", xlabel="step", ylabel="pixel AP (model resolution)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
