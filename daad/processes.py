"""Mapping a function over items in worker processes, results in item order.

Workers are never forked from the calling process: it may hold threads (a FiftyOne
session's pymongo monitors, torch's or OpenCV's pools), and a lock held by one of them at
fork time is never released in the child, which then hangs. Workers come from a
*forkserver* (or *spawn* where there is none): a fresh, single-threaded interpreter that
imports daad's worker modules once and forks each worker from that clean state. The
function and its state reach the workers pickled (once, however many workers); items and
results are pickled too. As with any multiprocessing code that does not fork, a *script*
that starts workers needs the ``if __name__ == "__main__":`` guard (each worker imports
the script's module); ``daad``'s commands and notebooks need nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver
from typing import Any, TypeVar

import cv2
from threadpoolctl import threadpool_limits

from daad.errors import DaadError

WINDOW = 4
"""Items in flight per worker."""
OWNER_POLL_S = 0.5
"""How often a worker checks that its owner lives, where the kernel cannot tell it (no pidfd)."""
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The environment the forkserver starts in: its imports start no BLAS threads."""
T = TypeVar("T")
R = TypeVar("R")
_TASK: tuple[Callable[[Any, Any], Any], Any] | None = None
"""The function and state a worker runs (set in the worker only)."""
_SERVER_LOCK = threading.Lock()


class WorkerError(DaadError):
    """A worker process died before returning its results."""


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def process_map(function: Callable[[Any, T], R], state: Any, items: Iterable[T], workers: int) -> Iterator[R]:
    """``function(state, item)`` for every item, in item order.

    With ``workers > 1`` the calls run in ``workers`` processes started from a clean
    interpreter (see the module docstring); ``function`` must be a module-level function and
    ``state`` picklable. At most ``WINDOW`` items per worker are in flight, so memory stays
    bounded however many items come. Each worker runs OpenCV and BLAS single-threaded, so
    N workers on N cores do not oversubscribe them. A worker that dies raises
    :class:`WorkerError` here instead of leaving this process waiting; if this process
    dies (kill -9 included), its workers exit too. With
    ``workers <= 1`` the calls run in this process.
    """
    if workers <= 1:
        for item in items:
            yield function(state, item)
        return
    task = pickle.dumps((function, state), protocol=pickle.HIGHEST_PROTOCOL)
    context = start_server((function.__module__,))
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start, initargs=(task, os.getpid()))
    try:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(_call, item))
            if len(pending) >= WINDOW * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise WorkerError(
            "a worker process died (killed, out of memory, or a script without the "
            "`if __name__ == \"__main__\":` guard that every worker imports); run with workers=1 (--workers 1) "
            "to see the error in this process"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def start_server(modules: Iterable[str]) -> mp.context.BaseContext:
    """The context workers start from: the forkserver, started now if it is not running
    (single-threaded, importing ``modules`` while this process goes on), or spawn where
    there is no forkserver. Call it early in a job to overlap the server's imports with it."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    with _SERVER_LOCK:
        saved = {name: os.environ.get(name) for name in SINGLE_THREADED}
        os.environ.update(SINGLE_THREADED)
        try:
            context.set_forkserver_preload(sorted(set(modules)))
            forkserver.ensure_running()  # returns at once; a no-op once the server runs
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return context


def _start(task: bytes, owner: int) -> None:
    global _TASK
    _TASK = pickle.loads(task)
    threading.Thread(target=_exit_with, args=(owner,), daemon=True, name="daad-owner-watch").start()
    cv2.setNumThreads(1)
    threadpool_limits(1)


def _exit_with(owner: int) -> None:
    """End this worker when process ``owner`` (the pool's owner) ends, however it ends: a
    worker of a killed owner would otherwise wait for work forever, keeping the forkserver
    (and whatever output they share) alive."""
    try:
        fd = os.pidfd_open(owner)
    except (AttributeError, OSError):  # no pidfd here: poll
        while True:
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(1)
            time.sleep(OWNER_POLL_S)
    select.select([fd], [], [])  # readable once the owner has exited
    os._exit(1)


def _call(item: Any) -> Any:
    function, state = _TASK
    return function(state, item)
