"""Freed heap goes back to the OS between stages (what keeps `grunet run`'s peak flat)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from grunet.memory import release_memory


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
