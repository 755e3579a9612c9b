"""CDM and DualAnoDiff sampling split across GPUs by Ray: the rows one process writes.

Each task asks for one GPU where the cluster has GPUs (one CPU otherwise) and samples one
block; the blocks are written as :mod:`daad.distributed.synthesis` writes any generated
dataset (parts, then shards, byte for byte a local run's, resumable). A diffusion batch's
rows depend, within a grey level, on which rows share the batch, so blocks are cut on
batch boundaries: a CDM block holds whole targets whose jobs (``per_target`` each) fill
whole batches, with the same per-target seeds (``start`` is the block's first target); a
DualAnoDiff block is a run of pairs starting at a multiple of ``batch_size``, each pair
with its own seeds. A worker process loads the model once and keeps it for the next
blocks Ray gives it. The parameters recorded in the card are taken on a worker, where the
device and dtype the rows are sampled with are known (the driver may have no GPU).
"""

from __future__ import annotations

import math
import pickle
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daad.distributed.cluster import STALL_S, task_resources
from daad.distributed.synthesis import RayWrite, blocks_of, write_on_ray
from daad.synthesis.base import GAVE_UP, GenerationReport
from daad.synthesis.output import EncodedRow, encode_row
from daad.synthesis.targets import TargetFiles

BLOCK_TARGETS = 16
"""CDM targets per task, rounded to whole batches."""
BLOCK_PAIRS = 64
"""DualAnoDiff pairs per task, rounded to whole batches."""
_LOADED: dict[bytes, Any] = {}
"""The generator this worker process loaded, by its pickled config (one at a time)."""


def cdm_block(batch_size: int, per_target: int, wanted: int = BLOCK_TARGETS) -> int:
    """Targets per CDM block: about ``wanted``, and a whole number of batches of jobs."""
    unit = batch_size // math.gcd(batch_size, per_target)
    return unit * max(1, round(wanted / unit))


def sample_cdm_on_ray(
    ray, config, targets: TargetFiles, out: Path, *, seed: int, size: int | None, progress: bool = True,
    block: int | None = None,
) -> RayWrite:
    """What ``daad synth cdm sample --ray`` writes (``config``: a CDM ``SampleConfig``)."""
    from daad.synthesis.cdm.sample import CDM, input_licences

    cdm = CDM(config)  # the checkpoint's facts; the model itself is loaded on the workers
    resources = task_resources(ray)
    params = ray.get(ray.remote(_params).options(**resources).remote(CDM, config), timeout=STALL_S) | {"size": size}
    return write_on_ray(
        ray, out, cdm_rows, (config, targets, seed),
        blocks_of(len(targets), block or cdm_block(config.batch_size, config.per_target)),
        name=cdm.name, params=params, seed=seed, evaluation=cdm.info["trained_on"]["evaluation"] or "none",
        input_licences=input_licences(cdm, []) | dict.fromkeys(targets.ids, targets.licence),
        identity={"targets": targets.items, "size": targets.size}, total=len(targets) * config.per_target,
        progress=progress, resources=resources,
    )


def sample_dualanodiff_on_ray(
    ray, config, targets: TargetFiles | None = None, *, block: int | None = None
) -> tuple[RayWrite, int]:
    """What ``daad synth dualanodiff sample --ray`` writes (``config``: its ``SampleConfig``),
    and the pairs skipped for an empty mask."""
    from daad.synthesis.dualanodiff.checkpoint import read_info
    from daad.synthesis.dualanodiff.sample import NAME, DualAnoDiffGenerator

    targets = targets if targets is not None else TargetFiles([])
    resources = task_resources(ray)
    params = ray.get(ray.remote(_params).options(**resources).remote(DualAnoDiffGenerator, config), timeout=STALL_S)
    pairs = block or config.batch_size * max(1, round(BLOCK_PAIRS / config.batch_size))
    done = write_on_ray(
        ray, Path(config.output_dir), dualanodiff_rows, (config, targets), blocks_of(config.num_pairs, pairs),
        name=NAME, params=params, seed=config.seed, evaluation=config.evaluation,
        input_licences=dict(read_info(config.checkpoint).licences) | dict.fromkeys(targets.ids, targets.licence),
        identity={"targets": targets.items, "size": targets.size}, total=config.num_pairs,
        progress=config.progress, resources=resources,
    )
    return done, done.report.gave_up


def cdm_rows(state: tuple[Any, TargetFiles, int], block: range) -> tuple[list[EncodedRow], GenerationReport]:
    """A worker: the CDM rows of targets ``block``."""
    config, targets, seed = state
    from daad.synthesis.cdm.sample import CDM

    cdm = _loaded(CDM, config)
    rows = [encode_row(r) for r in cdm.generate(targets[block.start : block.stop], None, seed, start=block.start)]
    return rows, GenerationReport(accepted=len(rows))


def dualanodiff_rows(state: tuple[Any, TargetFiles], block: range) -> tuple[list[EncodedRow], GenerationReport]:
    """A worker: the DualAnoDiff rows of pairs ``block`` (pairs skipped for an empty mask count as given up)."""
    config, targets = state
    from daad.synthesis.dualanodiff.sample import DualAnoDiffGenerator

    generator = _loaded(DualAnoDiffGenerator, config)
    before = generator.skipped_empty
    rows = [encode_row(r) for r in generator.generate(targets, None, config.seed, pairs=block)]
    return rows, GenerationReport(accepted=len(rows), skipped=Counter({GAVE_UP: generator.skipped_empty - before}))


def _params(cls, config) -> Mapping[str, Any]:
    """A worker: the generator's parameters as it samples them here (device, dtype)."""
    return _loaded(cls, config).params()


def _loaded(cls, config):
    key = pickle.dumps((cls.__qualname__, config))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = cls(config)
    return _LOADED[key]
