"""The evaluation sweep on Ray: one task per run, each row handed back as its run finishes.

:func:`ray_executor` is an :data:`~daad.evaluation.protocol.Executor`: ``daad protocol --ray``
passes it to :func:`~daad.evaluation.protocol.sweep`, which records each finished row in the
same ``results.csv`` as a local sweep (so a lost driver loses no finished run, and the same
command run again runs only the rest). Each run is one Ray task asking for one GPU where the
cluster has GPUs (one CPU otherwise); a worker killed mid-run is rerun by Ray; a run that raises
comes back as a row holding ``error``, which the sweep reports and does not record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from daad.distributed.cluster import MAX_RETRIES, STALL_S, StallWatch, task_resources

RunFunction = Callable[[Any], Mapping[str, Any]]
"""A module-level function running one spec and returning its row (with the spec's ``key``)."""


def ray_executor(ray, *, stall_s: float = STALL_S, resources: Mapping[str, float] | None = None,
                 progress: bool = True) -> Callable[[RunFunction, Sequence[Any]], Iterator[dict]]:
    """An executor running ``function(spec)`` for every spec as a Ray task on ``ray``'s cluster,
    yielding each row as it finishes (any order); no task finishing for ``stall_s`` seconds raises
    :class:`~daad.distributed.cluster.RayStalledError`."""

    def execute(function: RunFunction, specs: Sequence[Any]) -> Iterator[dict]:
        task = ray.remote(_run).options(
            **(resources or task_resources(ray)), max_retries=MAX_RETRIES, retry_exceptions=False, name="daad-run",
        )
        pending = {task.remote(function, spec): spec for spec in specs}
        watch = StallWatch(stall_s, "runs")
        with tqdm(total=len(pending), desc="runs", disable=not progress) as bar:
            while pending:
                finished, _ = watch.wait(ray, list(pending))
                for ref in finished:
                    spec = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a failed run is reported, the others go on
                        last = str(exc).strip().splitlines()[-1:] or [""]
                        row = {"key": getattr(spec, "key", repr(spec)), "error": f"{type(exc).__name__}: {last[0]}"}
                    bar.update(1)
                    yield row

    return execute


def _run(function: RunFunction, spec: Any) -> dict:
    """A worker: one run."""
    return dict(function(spec))
