"""A list of runs on Ray, one task each, results appended to a table; finished runs are never redone.

For sweeps such as generators × datasets × categories of detector training: the caller
gives picklable run specs, a module-level function ``function(spec) -> dict`` (JSON-able
result) and a results path. Each run not yet in the table becomes one Ray task asking for
one GPU where the cluster has GPUs (one CPU otherwise); a worker killed mid-run is rerun by
Ray. As each run finishes, the driver appends one line ``{"run", "spec", "result",
"seconds", "finished"}`` to the JSON Lines table and syncs it, so a lost driver loses no
finished run, and the same call made again runs only the rest. A run that raises is not
recorded: the others go on, and :class:`RunsFailedError` names every failed run at the end.
One driver at a time per table (an exclusive lock on it).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from daad.distributed.cluster import MAX_RETRIES, STALL_S, StallWatch, task_resources
from daad.errors import DaadError

RunFunction = Callable[[Any], Mapping[str, Any]]
"""A module-level function running one spec and returning its JSON-able result."""


class ResultsLockedError(DaadError):
    """Another driver is appending to the same results table."""


class RunsFailedError(DaadError):
    """Some runs raised; the others are in the results table."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        first = next(iter(self.failures.items()))
        super().__init__(
            f"{len(self.failures)} run(s) failed and were not recorded, e.g. {first[0]}: {first[1]}; "
            "fix the cause and run the same command again (finished runs are kept)"
        )


def run_key(spec: Any) -> str:
    """The key a run is recorded under: ``spec.key`` when it has one, else its fields as JSON."""
    if hasattr(spec, "key"):
        return str(spec.key)
    return json.dumps(_jsonable(spec), sort_keys=True, default=str)


def read_results(path: Path) -> dict[str, dict]:
    """The finished runs of a results table, by key (a line cut short by a crash is ignored)."""
    path = Path(path)
    if not path.is_file():
        return {}
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.endswith("\n"):
            row = json.loads(line)
            rows[row["run"]] = row
    return rows


def run_all(
    ray, specs: Sequence[Any], function: RunFunction, results: Path, *, progress: bool = True,
    stall_s: float = STALL_S, resources: Mapping[str, float] | None = None,
) -> list[dict]:
    """Run every spec not yet in ``results`` as a Ray task of ``function``, append each result as
    it comes, and return the table's rows for ``specs`` in their order."""
    keys = [run_key(s) for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("two run specs have the same key")
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(results, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsLockedError(f"{results} is being written by another driver; wait for it to finish") from None
        _drop_torn_line(fd)
        done = read_results(results)
        task = ray.remote(_run).options(
            **(resources or task_resources(ray)), max_retries=MAX_RETRIES, retry_exceptions=False, name="daad-run",
        )
        pending = {task.remote(function, spec): (key, spec) for key, spec in zip(keys, specs) if key not in done}
        failures: dict[str, str] = {}
        watch = StallWatch(stall_s, f"runs -> {results}")
        with tqdm(total=len(specs), initial=len(specs) - len(pending), desc="runs", disable=not progress) as bar:
            while pending:
                finished, _ = watch.wait(ray, list(pending))
                for ref in finished:
                    key, spec = pending.pop(ref)
                    try:
                        result, seconds = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a failed run is reported, the others go on
                        last = str(exc).strip().splitlines()[-1:] or [""]
                        failures[key] = f"{type(exc).__name__}: {last[0]}"
                        continue
                    row = {"run": key, "spec": _jsonable(spec), "result": result, "seconds": round(seconds, 3),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                    os.write(fd, (json.dumps(row, sort_keys=True, default=str) + "\n").encode("utf-8"))
                    os.fsync(fd)
                    done[key] = row
                    bar.update(1)
    finally:
        os.close(fd)
    if failures:
        raise RunsFailedError(failures)
    return [done[k] for k in keys]


def _run(function: RunFunction, spec: Any) -> tuple[Mapping[str, Any], float]:
    """A worker: one run, timed."""
    start = time.perf_counter()
    result = function(spec)
    return dict(result), time.perf_counter() - start


def _drop_torn_line(fd: int) -> None:
    """Cut a last line a killed driver left without its newline (it was never a finished run)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    data = os.pread(fd, size, 0)
    os.ftruncate(fd, data.rfind(b"\n") + 1)


def _jsonable(spec: Any) -> Any:
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        return dataclasses.asdict(spec)
    return spec
