"""Freed heap goes back to the OS between stages (what keeps `grunet run`'s peak flat)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from grunet.memory import collect_only_new_objects, release_memory


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_freed_fragmented_heap_is_returned_to_the_os():
    blocks = [np.ones(1000) for _ in range(25_000)]  # 8 KB each: heap, not mmap (~200 MB)
    survivors = blocks[::500]  # a few live blocks pin the heap, as a stage's leftovers do
    del blocks
    held = _rss_mib()
    if not release_memory():
        pytest.skip("not glibc: malloc_trim is unavailable, nothing to return")
    assert _rss_mib() < held - 100
    assert len(survivors) == 50


FRAGMENTING_PATTERN = """
import ctypes, os, sys
from pathlib import Path
from grunet.memory import _libc, keep_large_buffers_off_heap
if sys.argv[1] == "set":
    assert keep_large_buffers_off_heap()
libc = _libc()
libc.malloc.restype = ctypes.c_void_p
def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
def touched(n):
    address = libc.malloc(n)
    ctypes.memset(address, 1, n)
    return address
libc.free(ctypes.c_void_p(touched(30 << 20)))  # glibc's dynamic threshold rises to 30 MiB
buffers, pins = [], []
for _ in range(20):  # activations of 5 MiB, each followed by a small buffer that stays
    buffers.append(touched(5 << 20))
    pins.append(touched(8000))
held = rss()
for address in buffers:
    libc.free(ctypes.c_void_p(address))
print(held - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_freed_large_buffers_leave_the_process_at_once():
    """With grunet's setting, 100 MiB of freed 5 MiB buffers stop counting in RSS immediately,
    although small live buffers sit between them (what made prediction's peak drift)."""
    import subprocess

    def freed(mode: str) -> float:
        run = [sys.executable, "-c", FRAGMENTING_PATTERN, mode]
        return float(subprocess.run(run, check=True, capture_output=True, text=True).stdout)

    import grunet.memory

    if grunet.memory._libc() is None:
        pytest.skip("not glibc: mallopt is unavailable")
    baseline = freed("default")
    assert freed("set") > 90, f"freed buffers still resident (glibc's default: {baseline:.0f} MiB)"


def test_collections_in_a_run_skip_older_objects_and_still_free_every_cycle():
    """`grunet run` freezes what exists when its stages start (modules, the model): the
    collections between stages skip it, garbage made during the run is freed as usual, and
    what was frozen and died meanwhile is freed once the run ends."""
    import gc
    import weakref

    class Node:
        pass

    def garbage_cycle() -> weakref.ref:
        node = Node()
        node.me = node
        return weakref.ref(node)

    old = Node()
    old.me = old
    old_ref = weakref.ref(old)
    with collect_only_new_objects():
        assert gc.get_freeze_count() > 0
        new_ref = garbage_cycle()
        del old
        gc.collect()
        assert new_ref() is None
        assert old_ref() is not None
    gc.collect()
    assert old_ref() is None
    assert gc.get_freeze_count() == 0
