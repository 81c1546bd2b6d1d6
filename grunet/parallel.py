"""Bounded, ordered thread-pool maps (block-by-block work whose memory does not grow with size)
and the dask schedulers grunet computes with."""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import dask


def default_scheduler() -> Callable | None:
    """The scheduler dask would pick by default, found without importing ``distributed``.

    Asked for its default, dask imports ``distributed`` (0.14 s) to look for an active Client.
    A Client can exist only if ``distributed`` was imported already; otherwise dask's default
    for arrays and delayed work is its threaded scheduler, returned here. With ``distributed``
    loaded, or a scheduler set in dask's config: None (dask decides, as without grunet).
    """
    if "distributed" in sys.modules or dask.config.get("scheduler", None) is not None:
        return None
    return threaded_scheduler()


def rechunk_method() -> str | None:
    """``method`` for ``Array.rechunk``: "tasks" (dask's choice without a Client) unless
    ``distributed`` is loaded or dask's config names a method: then dask decides."""
    if "distributed" in sys.modules or dask.config.get("array.rechunk.method", None):
        return None
    return "tasks"


def threaded_scheduler() -> Callable:
    """dask's threaded scheduler (``scheduler="threads"``, without the Client lookup)."""
    from dask import threaded

    return threaded.get


def synchronous_scheduler() -> Callable:
    """dask's single-thread scheduler (``scheduler="sync"``, without the Client lookup)."""
    from dask import local

    return local.get_sync


def workers() -> int:
    """Threads to use: dask's ``num_workers`` setting, else the CPU count."""
    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def in_order(fn: Callable, items: Iterable, n_workers: int | None = None) -> Iterator:
    """``fn`` over ``items`` on a thread pool, results in order, at most 2 x workers in flight.

    Unlike a dask graph over all blocks, nothing waits in memory beyond those in flight.

    Example:
        >>> list(in_order(abs, [-1, 2, -3], 2))
        [1, 2, 3]
    """
    n_workers = workers() if n_workers is None else n_workers
    if n_workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(n_workers) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * n_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
