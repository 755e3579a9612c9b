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
    """A few test images with their full-resolution anomaly maps (for overlays)."""


def evaluate_generated(
    evaluation: EvaluationSet,
    generated: Sequence[Path],
    config: TrainConfig,
    *,
    extractor: nn.Module | None = None,
    overlays: int = OVERLAYS_PER_GENERATOR,
) -> list[GeneratorResult]:
    """Train and score one detector per generated dataset folder, in order."""
    test_ids = {s.id for s in evaluation.test}
    for path in generated:  # before any training: a leak anywhere invalidates the comparison
        leaked = rows_made_from(path, test_ids)
        if leaked:
            raise EvaluationDataError(
                f"{path}: {len(leaked)} rows were made from test images of {evaluation.name} (first: {', '.join(leaked[:3])}); "
                "generate from its training normals only (--target-split train, or --targets <category>/train/good)"
            )
    results = []
    examples = evaluation.test_anomalies[:overlays]
    for path in generated:
        start = time.perf_counter()
        gen = load_generated(path)
        trained = train_detector(evaluation.train_normals, gen.samples, evaluation.test, config)
        maps = full_resolution_maps(trained.model, evaluation.test, config)
        metrics = evaluate_maps(maps, [s.mask for s in evaluation.test])
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
            )
        )
    return results
