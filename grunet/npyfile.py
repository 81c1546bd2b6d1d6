"""Open ``.npy`` files from several threads at once."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

# numpy parses an .npy header with ast.literal_eval; on CPython 3.11 the AST constructor's
# recursion-depth counter is shared by all threads, so parses running in two threads at once can
# fail with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905).
# Seen in the segmentation scratch files read by dask's worker threads. Only the opening (the
# header) is serialised; reading the mapped data stays parallel.
_HEADER_LOCK = threading.Lock()


def open_npy(path: str | Path, **options) -> np.ndarray:
    """``np.load(path, mmap_mode="r", **options)``, safe to call from several threads."""
    with _HEADER_LOCK:
        return np.load(path, mmap_mode="r", **options)
