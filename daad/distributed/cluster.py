"""Connecting to Ray, choosing a task's resources, and waiting for tasks with a deadline.

``--ray local`` starts a Ray instance on this machine (or attaches to the one ``ray start``
left running here, or to ``RAY_ADDRESS``); ``--ray HOST:PORT`` (or ``ray://HOST:PORT``)
connects to a cluster. Ray's workers import daad as the driver does: on the driver's own
machine the driver's working directory comes first on their ``sys.path`` (Ray's default);
on other machines daad must be installed at the same version, and every path the job names
(targets, output, checkpoints) must be visible there at the same place (a shared file
system), as the workers read their inputs and write the shards themselves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from daad.errors import DaadError

LOCAL = "local"
"""The ``--ray`` value that starts (or attaches to) Ray on this machine."""
POLL_S = 0.5
"""How often a waiting driver wakes up (progress, deadline) while tasks run."""
STALL_S = 1800.0
"""Default deadline: a job in which no task finishes for this long is stopped (finished work is kept)."""
MAX_RETRIES = 3
"""Times Ray reruns a task whose worker process died (killed, out of memory, node lost)."""


class RayUnavailableError(DaadError):
    """Ray is not installed, or the cluster cannot be reached."""


class RayStalledError(DaadError):
    """No task of a Ray job finished within the deadline."""


def require_ray():
    """The ``ray`` module, or :class:`RayUnavailableError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError('Ray is not installed: pip install "daad[ray]"') from None
    return ray


@contextmanager
def connected(address: str) -> Iterator[Any]:
    """Ray, connected to ``address`` (``local``: this machine) for the block; a connection
    made here is closed at the end, one the caller already had is left open."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(
            address=None if address == LOCAL else address, include_dashboard=False,
            log_to_driver=False, configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailableError(f"cannot connect to Ray at {address!r}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def task_resources(ray) -> dict[str, float]:
    """One GPU per task where the cluster has GPUs, one CPU otherwise."""
    return {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}


class StallWatch:
    """Waits for Ray tasks with a deadline: :class:`RayStalledError` when no task has
    finished for ``stall_s`` seconds (``what`` names the job in the message)."""

    def __init__(self, stall_s: float, what: str) -> None:
        self.stall_s, self.what = stall_s, what
        self.last = time.monotonic()

    def wait(self, ray, pending: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """``(finished, still pending)`` after at most ``POLL_S`` seconds."""
        if pending:
            done, left = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S, fetch_local=False)
        else:  # nothing running, yet the job is not done: only the deadline ends this
            time.sleep(POLL_S)
            done, left = [], []
        now = time.monotonic()
        if done:
            self.last = now
        elif now - self.last > self.stall_s:
            raise RayStalledError(
                f"{self.what}: no task finished in {self.stall_s:.0f} s ({len(left)} pending); finished work "
                "is kept, rerun the same command to go on"
            )
        return done, left
