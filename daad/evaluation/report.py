"""The evaluation report: ``report.json``, ``report.md`` (generator x metric), overlay PNGs, ``curves.png``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from daad.atomic import write_atomically  # noqa: E402
from daad.dataset.plots import figure_png  # noqa: E402
from daad.evaluation.data import EvaluationSet, Sample, as_rgb  # noqa: E402
from daad.evaluation.harness import GeneratorResult  # noqa: E402
from daad.evaluation.metrics import PRO_FPR_LIMIT  # noqa: E402
from daad.evaluation.train import SELECTION_LABELS, TrainConfig  # noqa: E402
from daad.synthesis.preview import png_bytes  # noqa: E402

METRIC_NAMES = {
    "pixel_auroc": "pixel AUROC",
    "pixel_ap": "pixel AP",
    "pro": "PRO (FPR<=0.3)",
    "pixel_f1_max": "pixel F1-max",
    "image_auroc": "image AUROC",
}
OVERLAY_HEIGHT = 256
CAPTION_HEIGHT = 18
COLOUR_BAR_WIDTH = 34


def write_report(out: Path, evaluation: EvaluationSet, config: TrainConfig, results: Sequence[GeneratorResult]) -> dict:
    """Write every report file under ``out`` and return the JSON content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    content = {
        "evaluation": {
            "dataset": evaluation.name,
            "train_normals": len(evaluation.train_normals),
            "test_images": len(evaluation.test),
            "test_anomalies": len(evaluation.test_anomalies),
            "skipped": evaluation.skipped,
        },
        "config": config.as_dict(),
        "selection": SELECTION_LABELS[config.selection],
        "results": [
            {
                "generator": r.generator,
                "path": str(r.path),
                "rows": r.rows,
                "metrics": _finite(r.metrics.as_dict()),
                "per_defect": {d: _finite(m) for d, m in r.per_defect.items()},
                "authenticity": r.authenticity,
                "steps": r.steps,
                "best_step": r.best_step,
                "history": r.history,
                "wall_s": round(r.wall_s, 1),
            }
            for r in results
        ],
    }
    write_atomically(out / "report.json", [json.dumps(content, indent=2, allow_nan=False), "\n"])
    write_atomically(out / "report.md", [markdown_table(content)])
    for r in results:
        for sample, amap in r.examples:
            path = out / "overlays" / _safe(r.generator) / f"{_safe(sample.id)}.png"
            write_atomically(path, [png_bytes(overlay_strip(sample, amap))])
    plot_curves(out / "curves.png", results)
    return content


def markdown_table(content: dict) -> str:
    ev, cfg = content["evaluation"], content["config"]
    lines = [
        f"# Detector trained on pseudo-anomalies, scored on `{ev['dataset']}`",
        "",
        f"Train: {ev['train_normals']} normal images + each generator's rows. Test: {ev['test_images']} images, "
        f"{ev['test_anomalies']} with real anomalies. Metrics at the masks' full resolution.",
        "",
        f"Budget: {cfg['size']} px, {content['results'][0]['steps'] if content['results'] else cfg['steps']} steps, "
        f"batch {cfg['batch_size']}, lr {cfg['lr']}, UNet width {cfg['base_width']}, seed {cfg['seed']}.",
        f"Checkpoint selection: {content['selection']}.",
        "",
        "| generator | rows | " + " | ".join(METRIC_NAMES.values()) + " | FID | KID | best step | wall s |",
        "|---" * (len(METRIC_NAMES) + 6) + "|",
    ]
    for r in content["results"]:
        cells = [_fmt(r["metrics"][k]) for k in METRIC_NAMES]
        auth = [_fmt(r["authenticity"].get(k)) for k in ("fid", "kid")]
        lines.append(f"| {r['generator']} | {r['rows']} | " + " | ".join(cells + auth) + f" | {r['best_step']} | {r['wall_s']} |")
    if any(len(r["per_defect"]) > 1 for r in content["results"]):
        lines += ["", "Per defect type (its images + every test normal):", "",
                  "| generator | defect type | " + " | ".join(METRIC_NAMES.values()) + " |", "|---" * (len(METRIC_NAMES) + 2) + "|"]
        for r in content["results"]:
            for defect, m in r["per_defect"].items():
                lines.append(f"| {r['generator']} | {defect} | " + " | ".join(_fmt(m[k]) for k in METRIC_NAMES) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, dataset: str, contents: Sequence[dict]) -> dict:
    """``summary.json`` and ``summary.md`` over a dataset's per-category reports: each generator's metrics
    per category and their mean over the categories (as the papers report a dataset)."""
    rows: dict[str, dict[str, dict]] = {}
    for content in contents:
        for r in content["results"]:
            rows.setdefault(r["generator"], {})[content["evaluation"]["dataset"]] = r["metrics"]
    mean = {g: {k: _mean([m[k] for m in per.values()]) for k in METRIC_NAMES} for g, per in rows.items()}
    summary = {"dataset": dataset, "categories": [c["evaluation"]["dataset"] for c in contents], "per_category": rows, "mean": mean}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "summary.json", [json.dumps(summary, indent=2, allow_nan=False), "\n"])
    lines = [f"# {dataset}: per category and mean over {len(contents)} categories", "",
             "| generator | category | " + " | ".join(METRIC_NAMES.values()) + " |", "|---" * (len(METRIC_NAMES) + 2) + "|"]
    for g, per in rows.items():
        for category, m in per.items():
            lines.append(f"| {g} | {category} | " + " | ".join(_fmt(m[k]) for k in METRIC_NAMES) + " |")
        lines.append(f"| **{g}** | **mean** | " + " | ".join(_fmt(mean[g][k]) for k in METRIC_NAMES) + " |")
    write_atomically(out / "summary.md", ["\n".join(lines), "\n"])
    return summary


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: None if math.isnan(v) else v for k, v in metrics.items()}


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def overlay_strip(sample: Sample, amap: np.ndarray) -> np.ndarray:
    """Image | ground truth contour on the image | anomaly map as a heat map over the image | colour bar
    (0 to 1), under a caption with the sample's id, its defect type and its image score (the map's maximum). RGB."""
    scale = OVERLAY_HEIGHT / sample.image.shape[0]
    width = max(1, round(sample.image.shape[1] * scale))

    def fit(a: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.resize(a, (width, OVERLAY_HEIGHT), interpolation=interpolation)

    image = as_rgb(fit(sample.image, cv2.INTER_AREA))
    truth = image.copy()
    contours, _ = cv2.findContours(fit(np.ascontiguousarray(sample.mask, np.uint8), cv2.INTER_NEAREST), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(truth, contours, -1, (255, 0, 0), 1)
    blend = (0.5 * image + 0.5 * _heat(fit(amap, cv2.INTER_LINEAR))).astype(np.uint8)
    gap = np.full((OVERLAY_HEIGHT, 4, 3), 255, np.uint8)
    strip = np.concatenate([image, gap, truth, gap, blend, gap, colour_bar(OVERLAY_HEIGHT)], axis=1)
    caption = np.full((CAPTION_HEIGHT, strip.shape[1], 3), 255, np.uint8)
    text = f"{sample.id}  {sample.defect or 'normal'}  score {float(np.max(amap)):.3f}"
    cv2.putText(caption, text, (2, CAPTION_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([caption, strip], axis=0)


def _heat(values: np.ndarray) -> np.ndarray:
    """Scores in [0, 1] as JET colours (RGB)."""
    return cv2.cvtColor(cv2.applyColorMap((values.clip(0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def colour_bar(height: int, width: int = COLOUR_BAR_WIDTH) -> np.ndarray:
    """The heat map's scale: 1 at the top, 0 at the bottom, labelled, on white (RGB)."""
    bar = np.full((height, width, 3), 255, np.uint8)
    ramp = np.repeat(np.linspace(1, 0, height, dtype=np.float32)[:, None], 10, axis=1)
    bar[:, :10] = _heat(ramp)
    for label, y in (("1", 10), ("0.5", height // 2 + 4), ("0", height - 2)):
        cv2.putText(bar, label, (12, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def plot_curves(path: Path, results: Sequence[GeneratorResult]) -> None:
    """ROC, precision-recall and PRO (up to the FPR limit) of every generator."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    titles = {"roc": ("pixel ROC", "FPR", "TPR"), "pr": ("pixel precision-recall", "recall", "precision"),
              "pro": (f"PRO up to FPR {PRO_FPR_LIMIT}", "FPR", "per-region overlap")}
    for ax, (key, (title, xl, yl)) in zip(axes, titles.items()):
        for r in results:
            c = r.metrics.curves[key]
            ax.plot(c.x, c.y, label=r.generator)
        ax.set(title=title, xlabel=xl, ylabel=yl)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    write_atomically(path, [figure_png(fig)])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if value > 10 else f"{value:.3f}"
    return "n/a" if value is None else str(value)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
