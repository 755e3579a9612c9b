"""Why does CAI not come first in the utility experiment? Measures of each generator's training rows.

Reads the generated rows of ``utility_experiment.py``'s runs (same options, so the same folders;
a run's rows are generated first, through ``daad.evaluation.protocol.generate``, when missing) and
the real test anomalies of the dataset, at the detector's size, and prints one table:

- ``area %``: mask area over the image, median over rows (real: over test defects);
- ``width px``: the thickest point of the mask (2 x its largest distance to the background), median;
  for the real defects at the detector's size, also at 128 and 256 px, and the share of them whose
  mask vanishes there (no pixel at least half covered);
- ``changed %``: share of the mask where the grey level differs from the target by more than 7
  (Eq. 4's threshold); ``outside %``: share of the changed pixels that lie outside the mask;
- ``change``: mean |grey - target's grey| inside the mask (how much was injected, 0-255);
- ``contrast``: mean |grey inside the mask - grey of a 2 px ring around it| (0-255: how much the
  anomaly stands out from what surrounds it, which is what the detector sees), median, and
  ``contrast >= 20 %``: the share of rows (real defects) at least that distinct;
- ``colour``: spread between the RGB channels inside the mask, mean over rows (KolektorSDD is grey: 0);
- ``colour rows %``: rows whose image is not grey (one such row makes the whole training stack RGB).

Run: ``python benchmarks/cai_diagnosis.py --out /tmp/utility --size 64 --width 8 --datasets kolektorsdd``
"""

from __future__ import annotations

import statistics
from pathlib import Path

import cv2
import numpy as np

from utility_experiment import experiment_parser, experiment_specs  # noqa: E402  (puts the checkout on sys.path)

from daad.evaluation.data import as_rgb  # noqa: E402
from daad.evaluation.protocol import generate  # noqa: E402
from daad.evaluation.sets import load_evaluation_set  # noqa: E402
from daad.synthesis.cai import CAIConfig  # noqa: E402
from daad.synthesis.injection import grey  # noqa: E402
from daad.synthesis.output import read_generated  # noqa: E402
from daad.synthesis.targets import resize  # noqa: E402

THRESHOLD = CAIConfig().threshold  # Eq. 4: changed = more than 7 grey levels
RING = np.ones((5, 5), np.uint8)


def width_px(mask: np.ndarray) -> float:
    """2 x the largest distance from a mask pixel to the background: the mask's thickest point."""
    if not mask.any():
        return 0.0
    padded = np.pad(mask.astype(np.uint8), 1)
    return 2 * float(cv2.distanceTransform(padded, cv2.DIST_L2, 5).max())


def at_size(mask: np.ndarray, size: int) -> np.ndarray:
    """A native mask as the detector sees it: the pixels at least half covered after squashing to ``size``."""
    return (resize(mask.astype(np.float32), size) >= 0.5).astype(np.uint8)


def contrast(image: np.ndarray, mask: np.ndarray) -> float:
    g = grey(image).astype(np.float32)
    ring = cv2.dilate(mask, RING).astype(bool) & ~mask.astype(bool)
    return abs(float(g[mask > 0].mean()) - float(g[ring].mean())) if ring.any() and mask.any() else 0.0


def distinct(image: np.ndarray, mask: np.ndarray) -> float:
    """100 when the anomaly's :func:`contrast` is at least 20 grey levels, else 0 (averaged: a share of rows)."""
    return 100.0 if contrast(image, mask) >= 20 else 0.0


def colour(image: np.ndarray, mask: np.ndarray) -> float:
    if image.ndim == 2 or not mask.any():
        return 0.0
    pixels = image[mask > 0].astype(np.int16)
    return float((pixels.max(axis=1) - pixels.min(axis=1)).mean())


def row_measures(image: np.ndarray, mask: np.ndarray, target: np.ndarray) -> dict[str, float]:
    difference = np.abs(grey(image).astype(np.int16) - grey(target).astype(np.int16))
    changed = difference > THRESHOLD
    inside = mask > 0
    return {
        "area %": 100 * float(inside.mean()), "width px": width_px(mask),
        "changed %": 100 * float(changed[inside].mean()) if inside.any() else 0.0,
        "outside %": 100 * float((changed & ~inside).sum()) / max(1, int(changed.sum())),
        "change": float(difference[inside].mean()) if inside.any() else 0.0,
        "contrast": contrast(image, mask), "contrast >= 20 %": distinct(image, mask), "colour": colour(image, mask),
        "colour rows %": 0.0 if image.ndim == 2 or (image[..., :1] == image[..., 1:]).all() else 100.0,
    }


def real_measures(evaluation, size: int) -> dict[str, float | str]:
    """The real test defects at the detector's size (and their width at 128 / 256 px)."""
    rows, extra = [], {}
    for s in evaluation.test_anomalies:
        small = at_size(s.mask, size)
        image = resize(as_rgb(s.image), size)
        rows.append({"area %": 100 * float(s.mask.mean()), "width px": width_px(small),
                     "contrast": contrast(image, small), "contrast >= 20 %": distinct(image, small), "colour": colour(s.image, s.mask)})
    for other in sorted({size, 128, 256}):
        widths = [width_px(at_size(s.mask, other)) for s in evaluation.test_anomalies]
        extra[f"width@{other}"] = f"{statistics.median(widths):.1f} ({100 * widths.count(0.0) / len(widths):.0f} % vanish)"
    native = [width_px(s.mask) for s in evaluation.test_anomalies]
    shape = evaluation.test_anomalies[0].mask.shape
    extra["native"] = f"width {statistics.median(native):.1f} px on {shape[1]}x{shape[0]}"
    return {k: (statistics.mean if k in ("contrast >= 20 %", "colour") else statistics.median)(r[k] for r in rows)
            for k in rows[0]} | extra


def main() -> None:
    args = experiment_parser(__doc__.splitlines()[0]).parse_args()
    specs = experiment_specs(args)
    columns = ("area %", "width px", "changed %", "outside %", "change", "contrast", "contrast >= 20 %", "colour",
               "colour rows %")
    means = ("contrast >= 20 %", "colour", "colour rows %")
    for dataset in dict.fromkeys(s.dataset for s in specs):
        first = next(s for s in specs if s.dataset == dataset)
        evaluation = load_evaluation_set(dataset, Path(first.root))
        size = first.train.size
        targets = {s.id: resize(as_rgb(s.image), size) for s in evaluation.train_normals}
        print(f"\n{dataset} at {size} px: median per row; shares and colour: mean ({len(evaluation.test_anomalies)} real test defects)\n")
        print("| rows | n | " + " | ".join(columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        real = real_measures(evaluation, size)
        print(f"| real test defects | {len(evaluation.test_anomalies)} | "
              + " | ".join(f"{real[c]:.2f}" if c in real else "-" for c in columns) + " |")
        for spec in (s for s in specs if s.dataset == dataset):
            measures = [row_measures(row["image"], row["mask"], targets[row["target_id"]])
                        for row in read_generated(generate(spec, evaluation))]
            if not measures:
                print(f"| {spec.generator} | 0 |" + " - |" * len(columns))
                continue
            print(f"| {spec.generator} | {len(measures)} | " + " | ".join(
                f"{(statistics.mean if c in means else statistics.median)(m[c] for m in measures):.2f}"
                for c in columns) + " |", flush=True)
        print("\nreal defects' width at other sizes: " + ", ".join(f"{k} {v}" for k, v in real.items() if k not in columns))


if __name__ == "__main__":
    main()
