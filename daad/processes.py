"""Mapping a function over items in forked worker processes, results in item order."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import cv2
from threadpoolctl import threadpool_limits

WINDOW = 4
"""Items in flight per worker."""
T = TypeVar("T")
R = TypeVar("R")
_TASK: tuple[Callable[[Any, Any], Any], Any] | None = None
"""The function and state a worker runs (set in the worker only)."""


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fork_map(function: Callable[[Any, T], R], state: Any, items: Iterable[T], workers: int) -> Iterator[R]:
    """``function(state, item)`` for every item, in item order.

    With ``workers > 1`` the calls run in forked processes that inherit ``state`` (only
    items and results are pickled; at most ``WINDOW`` per worker are in flight, so memory
    stays bounded however many items come), each with single-threaded OpenCV and BLAS so that
    N workers on N cores do not oversubscribe them. OpenCV's thread pool does not survive
    a fork (the children deadlock in it), so this process runs OpenCV single-threaded
    while its workers live. With ``workers <= 1``, or where processes cannot be forked,
    the calls run here.
    """
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        for item in items:
            yield function(state, item)
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        # The workers inherit one BLAS thread: a BLAS library that starts its threads in a
        # forked child leaves them spinning for a while, taking a core from the others.
        with threadpool_limits(1):
            # A fork start method hands the initializer's arguments over without pickling them.
            with mp.get_context("fork").Pool(workers, initializer=_start, initargs=(function, state)) as pool:
                pending: deque = deque()
                for item in items:
                    pending.append(pool.apply_async(_call, (item,)))
                    if len(pending) >= WINDOW * workers:
                        yield pending.popleft().get()
                while pending:
                    yield pending.popleft().get()
    finally:
        cv2.setNumThreads(threads)


def _start(function: Callable[[Any, Any], Any], state: Any) -> None:
    global _TASK
    _TASK = (function, state)
    cv2.setNumThreads(1)


def _call(item: Any) -> Any:
    function, state = _TASK
    return function(state, item)
