"""Read any supported microscopy input lazily; write canonical OME-Zarr images, labels, arrays.

Public API (stable; other stages import it from here):

- :class:`ImageStack`: lazy 5D (T, C, Z, Y, X) dask array + pixel sizes, channel names, source.
- :func:`read_image`: TIFF / OME-TIFF / ImageJ / zarr / OME-Zarr / .npy / ``demo:<name>``.
- :func:`write_image`, :func:`open_store`: canonical ``<sample>.ome.zarr`` stores.
- :func:`write_labels`, :func:`read_labels`: ``<store>/labels/<name>`` (uint32).
- :func:`write_array`, :func:`read_array`: plain zarr groups (e.g. probabilities).
- :func:`percentile_range_dask`: per-channel robust ranges of arrays larger than memory.
- :func:`check_input`: validate one input completely (used by ``grunet check``).
"""

from __future__ import annotations

from grunet.io.ranges import percentile_range_dask
from grunet.io.readers import read_image
from grunet.io.stack import ImageStack
from grunet.io.store import (
    open_store,
    read_array,
    read_labels,
    scratch_compressors,
    write_array,
    write_image,
    write_labels,
)

__all__ = [
    "ImageStack",
    "open_store",
    "percentile_range_dask",
    "read_array",
    "read_image",
    "read_labels",
    "scratch_compressors",
    "write_array",
    "write_image",
    "write_labels",
]
