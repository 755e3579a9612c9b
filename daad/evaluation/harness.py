"""One detector per generated dataset, same seed and hyper-parameters, scored on the real test set."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from daad.evaluation.data import EvaluationDataError, EvaluationSet, Sample, as_rgb, load_generated, rows_made_from
from daad.evaluation.fid import authenticity
from daad.evaluation.metrics import LocalisationMetrics, evaluate_maps
from daad.evaluation.train import TrainConfig, full_resolution_maps, train_detector

OVERLAYS_PER_GENERATOR = 4


@dataclass
class GeneratorResult:
    generator: str
    path: Path
    rows: int
    metrics: LocalisationMetrics
    steps: int
    best_step: int
    history: list[dict[str, float]]
    authenticity: dict[str, float | str]
    wall_s: float
    examples: list[tuple[Sample, np.ndarray]]
    """A few test images, sampled across defect types, with their full-resolution anomaly maps (for overlays)."""
    per_defect: dict[str, dict[str, float]]
    """The metrics on each defect type's images plus every test normal, by defect type."""
    maps: list[np.ndarray] | None = None
    """Every test image's full-resolution anomaly map, in ``evaluation.test`` order (``keep_maps``)."""


def examples_across_defects(test: Sequence[Sample], count: int) -> list[Sample]:
    """Up to ``count`` defective test images, taken in turn from each defect type (the first images of each)."""
    by_type: dict[str, list[Sample]] = {}
    for s in test:
        if s.defect:
            by_type.setdefault(s.defect, []).append(s)
    picked: list[Sample] = []
    for rank in range(max((len(v) for v in by_type.values()), default=0)):
        picked += [v[rank] for _, v in sorted(by_type.items()) if rank < len(v)]
    return picked[:count]


def per_defect_metrics(test: Sequence[Sample], maps: Sequence[np.ndarray]) -> dict[str, dict[str, float]]:
    """Metrics of each defect type's images together with every test normal (MVTec AD's per-type protocol)."""
    normals = [i for i, s in enumerate(test) if not s.defect]
    out = {}
    for defect in sorted({s.defect for s in test if s.defect}):
        chosen = [i for i, s in enumerate(test) if s.defect == defect] + normals
        out[defect] = evaluate_maps([maps[i] for i in chosen], [test[i].mask for i in chosen]).as_dict()
    return out


def evaluate_generated(
    evaluation: EvaluationSet,
    generated: Sequence[Path],
    config: TrainConfig,
    *,
    extractor: nn.Module | None = None,
    overlays: int = OVERLAYS_PER_GENERATOR,
    keep_maps: bool = True,
) -> list[GeneratorResult]:
    """Train and score one detector per generated dataset folder, in order; each result carries its
    anomaly maps unless ``keep_maps`` is false. A folder whose rows were made from this set's training
    normals (among others, e.g. every category of a dataset) gives only those rows."""
    test_ids = {s.id for s in evaluation.test}
    for path in generated:  # before any training: a leak anywhere invalidates the comparison
        leaked = rows_made_from(path, test_ids)
        if leaked:
            raise EvaluationDataError(
                f"{path}: {len(leaked)} rows were made from test images of {evaluation.name} (first: {', '.join(leaked[:3])}); "
                "generate from its training normals only (--target-split train, or --targets <category>/train/good)"
            )
    results = []
    examples = examples_across_defects(evaluation.test, overlays)
    train_ids = {s.id for s in evaluation.train_normals}
    for path in generated:
        start = time.perf_counter()
        gen = load_generated(path, targets=train_ids)
        trained = train_detector(evaluation.train_normals, gen.samples, evaluation.test, config)
        maps = full_resolution_maps(trained.model, evaluation.test, config)
        metrics = evaluate_maps(maps, [s.mask for s in evaluation.test])
        defects = {s.defect for s in evaluation.test if s.defect}
        per_defect = per_defect_metrics(evaluation.test, maps) if len(defects) > 1 else {d: metrics.as_dict() for d in defects}
        by_id = {s.id: m for s, m in zip(evaluation.test, maps)}
        results.append(
            GeneratorResult(
                generator=gen.name,
                path=Path(path),
                rows=len(gen.samples),
                metrics=metrics,
                steps=trained.steps,
                best_step=trained.best_step,
                history=trained.history,
                authenticity=authenticity(
                    extractor, [as_rgb(s.image) for s in gen.samples], [as_rgb(s.image) for s in evaluation.test_anomalies], config.seed
                ),
                wall_s=time.perf_counter() - start,
                examples=[(s, by_id[s.id]) for s in examples],
                per_defect=per_defect,
                maps=maps if keep_maps else None,
            )
        )
    return results
