"""Bounded, ordered thread-pool maps: block-by-block work whose memory does not grow with size."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import dask


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
