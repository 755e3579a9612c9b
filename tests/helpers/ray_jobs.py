"""Module-level functions the Ray tests hand to workers (Ray pickles them by module name)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from daad.synthesis.parallel import chunk_rows

SLOW_S = 0.6
"""How long a slow block waits before generating: long enough to be killed in the middle."""


def slow_rows(state, block: range):
    """:func:`daad.synthesis.parallel.chunk_rows`, after a pause."""
    time.sleep(SLOW_S)
    return chunk_rows(state, block)


def square(spec: dict) -> dict:
    """A trivial run: leaves a mark (one file per call) in ``spec["marks"]``, waits, squares ``x``."""
    marks = Path(spec["marks"])
    marks.mkdir(parents=True, exist_ok=True)
    (marks / f"{spec['x']}-{os.getpid()}-{time.monotonic_ns()}").touch()
    time.sleep(spec.get("wait", 0))
    if spec["x"] < 0:
        raise ValueError(f"negative x: {spec['x']}")
    return {"square": spec["x"] ** 2}


def main() -> None:
    """``python -m tests.helpers.ray_jobs CALL ADDRESS``: a driver that runs
    :func:`daad.distributed.synthesis.write_on_ray` with the pickled keyword arguments in
    ``CALL`` on the cluster at ``ADDRESS`` (the test kills it half way)."""
    import pickle
    import sys

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    from daad.distributed.synthesis import write_on_ray

    call = pickle.loads(Path(sys.argv[1]).read_bytes())
    ray.init(address=sys.argv[2], log_to_driver=False)
    write_on_ray(ray, **call)


if __name__ == "__main__":
    main()
