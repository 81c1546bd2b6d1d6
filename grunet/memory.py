"""Give freed heap back to the operating system between pipeline stages.

Why: a stage (prediction above all) frees its large buffers when it ends, but glibc's allocator
keeps the freed pages mapped in the process, so the next stage's working set is stacked on top
of them and ``grunet run``'s peak RSS grows with the image although every stage alone is flat.
``malloc_trim(0)`` returns those pages; on other C libraries (macOS, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache


@cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_memory() -> bool:
    """Collect garbage and return the freed heap to the OS; True where the heap was trimmed."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
