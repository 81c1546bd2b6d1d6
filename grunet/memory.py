"""Keep the process's resident memory equal to what it really holds (glibc's heap).

Why: a stage (prediction above all) frees its large buffers when it ends, but glibc's allocator
keeps the freed pages mapped in the process, so the next stage's working set is stacked on top
of them and ``grunet run``'s peak RSS grows with the image although every stage alone is flat.
``malloc_trim(0)`` returns those pages between stages. Within prediction, glibc's *dynamic* mmap
threshold (raised to the largest freed buffer, up to 32 MiB) puts the network's activations on
the heap, where windows of different shapes and the buffers kept between them fragment it: the
peak RSS of predicting one 2048² plane varied 1.08-1.37 GiB between identical runs.
:func:`keep_large_buffers_off_heap` maps every buffer of 4 MiB or more on its own, so freeing
it returns it at once (run's peak 0.85-0.88 GiB, the same every run). Such buffers are backed by
transparent huge pages (torch: ``THP_MEM_ALLOC_ENABLE``, from 2 MiB;
numpy: from 4 MiB), which keeps fresh mappings as fast as reused heap (measured: same forward and
segment time; a 1 MiB threshold, whose 1-4 MiB numpy buffers get no huge pages, made segment
+ measure 10 % slower; without huge pages prediction was 15-25 % slower). On other C libraries
(macOS, musl) both are no-ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Iterator
from functools import cache

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 4 << 20


@cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


@cache
def keep_large_buffers_off_heap() -> bool:
    """Map buffers of ``MMAP_THRESHOLD`` bytes or more one by one (glibc ``mallopt``), so the
    process's peak RSS is its peak working set whatever the image size; True where set.

    Process-wide; every ``grunet`` command but ``train`` calls it first thing, and so does
    :func:`grunet.predict.predict_store`. Not training: there, with 3 MiB activations kept for
    the backward pass, it measured 8-15 % slower per step with a higher peak.
    """
    # torch backs its CPU buffers >= 2 MiB with huge pages: read at its first large allocation,
    # so this takes effect where called before any (the commands call it first thing)
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_memory() -> bool:
    """Collect garbage and return the freed heap to the OS; True where the heap was trimmed."""
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@contextlib.contextmanager
def collect_only_new_objects() -> Iterator[None]:
    """Within the block, garbage collections skip every object alive at its start.

    Why: by the time a run starts its stages it holds the objects of torch, pandas, dask and
    zarr (~270,000 of them), and a full collection walks them all: 0.3 s for each
    :func:`release_memory` between stages and for every automatic full collection, to find
    nothing (modules and the model live on). Objects made inside the block are collected as
    usual; at its end the frozen ones rejoin the collector, so whatever of them became garbage
    in the meantime is still freed.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
