"""Bounded, ordered thread-pool maps: block-by-block work whose memory does not grow with size."""

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
    loaded: None (dask decides, so an active Client still runs the work).
    """
    if "distributed" in sys.modules:
        return None
    import dask.threaded

    return dask.threaded.get


def rechunk_method() -> str | None:
    """``method`` for ``Array.rechunk``: "tasks" (dask's choice without a Client) unless
    ``distributed`` is loaded, where dask decides (and would import it to look for a Client)."""
    return None if "distributed" in sys.modules else "tasks"


def threaded_scheduler() -> Callable:
    """dask's threaded scheduler (``scheduler="threads"``, without the Client lookup)."""
    import dask.threaded

    return dask.threaded.get


def synchronous_scheduler() -> Callable:
    """dask's single-thread scheduler (``scheduler="sync"``, without the Client lookup)."""
    import dask.local

    return dask.local.get_sync


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
