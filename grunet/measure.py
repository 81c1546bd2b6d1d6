"""Per-cell measurements: one row per cell and (t, z) plane, chunk by chunk, exact.

Every plane is measured block by block, and rows stream out in batches, so memory is bounded by
a few blocks (plus 4 bytes per cell of the plane for the id scan) whatever the plane's size. A
first cheap pass lists the ids of every block; a cell whose pixels all lie in one block is
measured there, a cell found in several blocks is measured afterwards on the crop of its whole
bounding box. Either way the values are those of ``skimage.measure.regionprops_table`` on the
whole plane (see :mod:`grunet.cellprops`, which computes them for a whole block at once), and
never depend on the blocks: every property is taken about the cell's own bounding box.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from grunet.atomic import atomic_output, check_output_free
from grunet.cellprops import SHAPE_KEYS, region_rows
from grunet.errors import InputError
from grunet.parallel import in_order, rechunk_method, synchronous_scheduler

if TYPE_CHECKING:
    import dask.array as da

SHAPE_COLUMNS = list(SHAPE_KEYS)  # area, perimeter, ... (regionprops' definitions)
INTENSITY_COLUMNS = ["mean_intensity", "min_intensity", "max_intensity", "integrated_intensity"]
BASE_COLUMNS = ["sample", "t", "z", "label"]
POSITION_COLUMNS = [
    "centroid_y",
    "centroid_x",
    "centroid_y_um",
    "centroid_x_um",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
]


def channel_column_names(channel_names: Sequence[str]) -> list[str]:
    """Safe, unique column suffixes for channel names ("DAPI", "GFP 2" -> "DAPI", "GFP_2")."""
    out: list[str] = []
    for i, name in enumerate(channel_names):
        clean = re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_") or f"ch{i}"
        out.append(clean if clean not in out else f"{clean}_{i}")
    return out


def table_columns(channel_names: Sequence[str]) -> list[str]:
    """The measurement columns, in order, for these channels (metadata columns come after)."""
    channels = channel_column_names(channel_names)
    columns = BASE_COLUMNS + POSITION_COLUMNS
    columns += ["area", "area_um2"] + SHAPE_COLUMNS[1:]
    columns += [f"{prefix}_{ch}" for prefix in INTENSITY_COLUMNS for ch in channels]
    return columns


# --------------------------------------------------------------------------- one region / block


FIELDS = ["label", *POSITION_COLUMNS[:2], *POSITION_COLUMNS[4:], *SHAPE_COLUMNS]  # row layout


def _local_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids with ids[0] = 0, int32 local labels 0..k) of a block with arbitrary uint ids."""
    foreground = labels > 0
    if not foreground.any():
        return np.zeros(1, np.int64), np.zeros(labels.shape, np.int32)
    values = labels[foreground].astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if high - low < 4 * labels.size + 2**16:  # a lookup table beats sorting every pixel
        present = np.zeros(high - low + 1, bool)
        present[values - low] = True
        ids = np.concatenate([[0], np.flatnonzero(present) + low])
        lut = np.cumsum(present, dtype=np.int32)
        local = np.zeros(labels.shape, np.int32)
        local[foreground] = lut[values - low]
        return ids, local
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.int32)
    if ids[0] != 0:  # index 0 must be background
        ids, inverse = np.concatenate([[0], ids]), inverse + 1
    return ids.astype(np.int64), inverse


def _block_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted ids (> 0) present in a block, as uint32 (the cheap first pass)."""
    return _local_ids(np.asarray(labels))[0][1:].astype(np.uint32)


def _block_rows(labels: np.ndarray, image, origin, shared: np.ndarray) -> dict[str, Any]:
    """Measure the block's cells that no other block holds; bboxes of the ``shared`` ones."""
    ids, inverse = _local_ids(labels)
    split = np.isin(ids, shared)
    split[0] = False
    crossing = {}
    if split.any():
        boxes = ndi.find_objects(inverse)
        for local in np.flatnonzero(split):
            ys, xs = boxes[local - 1]
            crossing[int(ids[local])] = (
                origin[0] + ys.start,
                origin[1] + xs.start,
                origin[0] + ys.stop,
                origin[1] + xs.stop,
            )
        inverse = np.where(split[inverse], 0, inverse).astype(np.int32)
    rows = region_rows(inverse, image, origin)
    rows[:, 0] = ids[rows[:, 0].astype(np.int64)]  # local ids -> the plane's ids
    return {"rows": rows, "crossing": crossing}


def _crossing_rows(cells, labels: np.ndarray, image, origin) -> list[np.ndarray]:
    """Measure each (label, bbox) of ``cells`` on its bbox crop of a window at ``origin``."""
    out = []
    for label, (y0, x0, y1, x1) in cells:
        sl = (slice(y0 - origin[0], y1 - origin[0]), slice(x0 - origin[1], x1 - origin[1]))
        mask = (labels[sl] == label).astype(np.uint8)
        crop = None if image is None else image[(slice(None), *sl)]
        (row,) = region_rows(mask, crop, (y0, x0))
        row[0] = label
        out.append(row)
    return out


# --------------------------------------------------------------------------- planes and stores


def _starts(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(int)


def _as_dask(array) -> da.Array:
    # imported here: `grunet count` reads table helpers of this module and needs no dask (0.5-0.7 s)
    import dask.array as da

    return array if isinstance(array, da.Array) else da.from_array(np.asarray(array), -1)


def iter_plane_rows(
    labels,
    image=None,
    *,
    block: int | tuple[int, int] | None = None,
) -> Iterator[np.ndarray]:
    """Per-cell rows of one (Y, X) label plane, in batches, block by block (bounded memory).

    Args:
        labels: (Y, X) integer labels (numpy or dask).
        image: (C, Y, X) intensities (numpy or dask) or None.
        block: YX block size; None keeps the dask chunks (numpy: the whole plane at once).

    Yields:
        (n, len(FIELDS) + 4 C) float64 arrays (see :func:`measure_plane`): first the cells of
        each block that lie in that block alone (blocks in raster order, rows sorted by label),
        then the cells found in several blocks. Every cell of the plane appears once.
    """
    labels = _as_dask(labels)
    image = None if image is None else _as_dask(image)
    if block is not None:
        by, bx = (block, block) if np.isscalar(block) else block
        labels = labels.rechunk((int(by), int(bx)), method=rechunk_method())
    ys, xs = _starts(labels.chunks[0]), _starts(labels.chunks[1])
    grid = list(np.ndindex(len(ys) - 1, len(xs) - 1))

    def region(ij):
        i, j = ij
        return slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1])

    def read(array, sl):
        return np.asarray(array[sl].compute(scheduler=synchronous_scheduler()))

    # pass 1: which ids live in more than one block (4 bytes per cell and block)
    found = list(in_order(lambda ij: _block_ids(read(labels, region(ij))), grid))
    ids, counts = np.unique(np.concatenate([*found, np.zeros(0, np.uint32)]), return_counts=True)
    shared = ids[counts > 1]
    del found, ids, counts

    def measure(ij):
        sl = region(ij)
        img = None if image is None else read(image, (slice(None), *sl))
        return _block_rows(read(labels, sl), img, (sl[0].start, sl[1].start), shared)

    boxes: dict[int, tuple] = {}
    for part in in_order(measure, grid):
        if len(part["rows"]):
            yield part["rows"]
        for label, (y0, x0, y1, x1) in part["crossing"].items():
            old = boxes.get(label, (y0, x0, y1, x1))
            boxes[label] = (min(old[0], y0), min(old[1], x0), max(old[2], y1), max(old[3], x1))
    # cells in several blocks: one window read per group of cells starting in the same block
    groups: dict[tuple[int, int], list[tuple[int, tuple]]] = {}
    for label, box in sorted(boxes.items()):
        key = (np.searchsorted(ys, box[0], "right"), np.searchsorted(xs, box[1], "right"))
        groups.setdefault(key, []).append((label, box))
    del boxes

    def crossing(cells):
        window = np.asarray([box for _, box in cells])
        y0, x0 = window[:, 0].min(), window[:, 1].min()
        sl = (slice(y0, window[:, 2].max()), slice(x0, window[:, 3].max()))
        img = None if image is None else read(image, (slice(None), *sl))
        return _crossing_rows(cells, read(labels, sl), img, (y0, x0))

    for part in in_order(crossing, list(groups.values())):
        if part:
            yield np.stack(part)


def measure_plane(
    labels,
    image=None,
    *,
    block: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """Per-cell rows of one (Y, X) label plane (numpy or dask), block by block.

    Args:
        labels: (Y, X) integer labels.
        image: (C, Y, X) intensities (numpy or dask) or None.
        block: YX block size; None keeps the dask chunks (numpy: the whole plane at once).

    Returns:
        (n_cells, len(FIELDS) + 4 C) float64 array, one row per cell sorted by label: FIELDS,
        then per channel mean, min, max and integrated intensity; equal to whole-plane values.
    """
    width = len(FIELDS) + 4 * (0 if image is None else image.shape[0])
    rows = np.concatenate([*iter_plane_rows(labels, image, block=block), np.zeros((0, width))])
    return rows[np.argsort(rows[:, 0], kind="stable")]


def _plane_frame(rows: np.ndarray, channels: list[str], t: int, z: int, pixel_sizes):
    py = pixel_sizes.get("y") or np.nan
    px = pixel_sizes.get("x") or np.nan
    columns = dict(zip(FIELDS, rows.T))
    frame = pd.DataFrame(
        {
            "t": np.full(len(rows), t, np.int32),
            "z": np.full(len(rows), z, np.int32),
            "label": columns["label"].astype(np.uint32),
            "centroid_y": columns["centroid_y"],
            "centroid_x": columns["centroid_x"],
            "centroid_y_um": columns["centroid_y"] * py,
            "centroid_x_um": columns["centroid_x"] * px,
            **{key: columns[key].astype(np.int64) for key in POSITION_COLUMNS[4:]},
            "area": columns["area"].astype(np.int64),
            "area_um2": columns["area"] * (py * px),
            **{key: columns[key] for key in SHAPE_COLUMNS[1:]},
        }
    )
    n = len(channels)
    for k, prefix in enumerate(INTENSITY_COLUMNS):
        for c, name in enumerate(channels):
            frame[f"{prefix}_{name}"] = rows[:, len(FIELDS) + k * n + c]
    return frame


# Rows per Parquet batch (row group) of measure_store. A batch lives as a float64 array, a
# DataFrame and an Arrow table at once, ~3 x 8 bytes x columns per row: 16384 rows of the ~30
# columns of one channel are ~12 MiB. Only planes with that many cells fill a batch: with
# 65536 rows the measure peak at 32768² was 349 MiB (1.31x that at 4096²), with 16384 323 MiB
# (1.23x; benchmarks/segment_memory.py).
BATCH_ROWS = 16384


def _check_stack(labels, image):
    if labels.ndim == 5:
        labels = labels[:, 0]
    if labels.ndim != 4:
        raise ValueError(f"labels must be (T, 1, Z, Y, X) or (T, Z, Y, X), got {labels.shape}")
    if image is not None and (image.shape[0], *image.shape[2:]) != tuple(labels.shape):
        raise ValueError(f"image {image.shape} does not match labels {labels.shape}")
    return labels


def iter_tables(
    labels,
    image=None,
    *,
    channel_names: Sequence[str] | None = None,
    pixel_sizes: dict[str, float | None] | None = None,
    sample: str = "sample",
    metadata: dict[str, Any] | None = None,
    block: int | tuple[int, int] | None = None,
    progress: bool = False,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pd.DataFrame]:
    """The per-cell table of a labelled stack in batches of about ``batch_rows`` rows.

    Arguments as :func:`measure_stack`. Batches come plane by plane ((t, z) order); within a
    plane, cells lying in one block come block by block, cells spanning blocks last. Memory
    stays bounded by a few blocks and one batch, whatever the stack's size. The first batch
    always comes (empty if there are no cells), so a writer learns the columns.
    """
    labels = _check_stack(labels, image)
    n_channels = 0 if image is None else image.shape[1]
    names = list(channel_names) if channel_names else [f"ch{i}" for i in range(n_channels)]
    channels = channel_column_names(names)
    pixel_sizes = pixel_sizes or {}
    columns = table_columns(names) + list(metadata or {})
    for key in metadata or {}:
        if key in table_columns(names):
            raise InputError(None, f"metadata key {key!r} clashes with a measurement column")

    def finish(rows, t, z):
        frame = _plane_frame(rows, channels, t, z, pixel_sizes)
        frame.insert(0, "sample", pd.Series([sample] * len(frame), dtype=object))
        for key, value in (metadata or {}).items():
            frame[key] = pd.Series([value] * len(frame), dtype=object)
        return frame[columns]

    width = len(FIELDS) + 4 * n_channels
    sent = False
    for t, z in _planes(labels.shape[0], labels.shape[1], progress):
        plane_image = None if image is None else image[t, :, z]
        pending, size = [], 0
        for rows in iter_plane_rows(labels[t, z], plane_image, block=block):
            pending.append(rows)
            size += len(rows)
            if size >= batch_rows:
                yield finish(np.concatenate(pending), t, z)
                pending, size, sent = [], 0, True
        if pending:
            yield finish(np.concatenate(pending), t, z)
            sent = True
    if not sent:
        yield finish(np.zeros((0, width)), 0, 0)


def measure_stack(
    labels,
    image=None,
    *,
    channel_names: Sequence[str] | None = None,
    pixel_sizes: dict[str, float | None] | None = None,
    sample: str = "sample",
    metadata: dict[str, Any] | None = None,
    block: int | tuple[int, int] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The per-cell table of a labelled stack: one row per cell and (t, z) plane.

    Args:
        labels: (T, 1, Z, Y, X) or (T, Z, Y, X) labels (numpy or dask).
        image: (T, C, Z, Y, X) intensities or None (no intensity columns).
        channel_names: one per channel (default ch0, ch1, ...).
        pixel_sizes: {"y": um, "x": um, ...}; missing sizes give NaN µm columns.
        sample: value of the ``sample`` column; metadata: extra constant columns.
        block: YX block size (default: the dask chunks; numpy: whole planes).
        progress: tqdm bar over planes on stderr.

    Returns:
        DataFrame with :func:`table_columns` then the metadata columns (empty if no cells),
        rows sorted by (t, z, label). For tables larger than memory use :func:`iter_tables`.

    Example:
        >>> table = measure_stack(labels, image, channel_names=["DAPI"])  # doctest: +SKIP
    """
    frames = iter_tables(
        labels,
        image,
        channel_names=channel_names,
        pixel_sizes=pixel_sizes,
        sample=sample,
        metadata=metadata,
        block=block,
        progress=progress,
    )
    table = pd.concat(list(frames), ignore_index=True)
    return table.sort_values(["t", "z", "label"], kind="stable", ignore_index=True)


def _planes(n_t: int, n_z: int, progress: bool) -> Iterator[tuple[int, int]]:
    planes = [(t, z) for t in range(n_t) for z in range(n_z)]
    if progress:
        from tqdm import tqdm

        return iter(tqdm(planes, desc="measure planes", unit="plane"))
    return iter(planes)


def write_table(
    table: pd.DataFrame | Iterable[pd.DataFrame],
    out_parquet: str | Path,
    provenance: dict,
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write a table (or its batches) as Parquet (provenance in the schema) and CSV, atomically.

    Batches are appended as they come (one Parquet row group and one CSV chunk each), so a table
    larger than memory streams through; all batches must have the first one's columns.

    Returns:
        (parquet path, csv path).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_parquet = Path(out_parquet)
    out_csv = out_parquet.with_suffix(".csv")
    check_output_free(out_parquet, overwrite)
    check_output_free(out_csv, overwrite)
    batches = iter([table]) if isinstance(table, pd.DataFrame) else iter(table)
    with (
        atomic_output(out_parquet, overwrite=overwrite) as tmp_parquet,
        atomic_output(out_csv, overwrite=overwrite) as tmp_csv,
        open(tmp_csv, "w", newline="") as csv,
    ):
        writer, schema = None, None
        try:
            for batch in batches:
                arrow = pa.Table.from_pandas(batch, preserve_index=False, schema=schema)
                if writer is None:
                    meta = dict(arrow.schema.metadata or {})
                    meta[b"grunet"] = json.dumps(provenance, default=str).encode()
                    schema = _settled_schema(arrow.schema).with_metadata(meta)
                    writer = pq.ParquetWriter(tmp_parquet, schema)
                    arrow = arrow.cast(schema)
                    batch.iloc[:0].to_csv(csv, index=False)
                writer.write_table(arrow)
                batch.to_csv(csv, index=False, header=False)
        finally:
            if writer is not None:
                writer.close()
    return out_parquet, out_csv


def _settled_schema(schema):
    """Columns whose type the first batch could not tell (all null) are stored as strings."""
    import pyarrow as pa

    fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def read_provenance(parquet: str | Path) -> dict[str, Any]:
    """The ``grunet`` provenance stored in a table's Parquet schema metadata ({} if none)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(parquet).metadata or {}
    return json.loads(meta[b"grunet"]) if b"grunet" in meta else {}


def sample_name(store: str | Path) -> str:
    """``/x/A01.ome.zarr`` -> ``A01``."""
    name = Path(store).name
    for suffix in (".ome.zarr", ".zarr"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def measure_store(
    image_store: str | Path,
    out_parquet: str | Path,
    *,
    labels: str = "cells",
    sample: str | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    block: int | None = None,
    progress: bool = False,
) -> Path:
    """Measure ``<store>/labels/<labels>`` against the store's image into a Parquet + CSV table.

    Args:
        image_store: canonical ``<sample>.ome.zarr`` with a label image.
        out_parquet: output ``.parquet`` path; the CSV is written beside it (same stem).
        labels: label image name; sample: ``sample`` column (default: the store's name).
        metadata: constant columns from the sample sheet (e.g. well, condition).
        overwrite: replace existing outputs; block: YX block size (default: the store chunks).
        progress: tqdm bar on stderr.

    Returns:
        The Parquet path.

    Example:
        >>> measure_store("A01.ome.zarr", "cells/A01.parquet")  # doctest: +SKIP
    """
    import zarr

    from grunet import __version__
    from grunet import io as gio

    image_store, out_parquet = Path(image_store), Path(out_parquet)
    if out_parquet.suffix != ".parquet":
        raise InputError(out_parquet, "the table must end in .parquet (a .csv is written beside)")
    check_output_free(out_parquet, overwrite)
    check_output_free(out_parquet.with_suffix(".csv"), overwrite)
    stack = gio.open_store(image_store)
    if not (image_store / "labels" / labels).is_dir() and (image_store / "labels/classes").is_dir():
        from grunet.semantic_predict import instance_only

        raise instance_only("store (labels/classes, no labels/" + labels + ")", image_store)
    label_data = gio.read_labels(image_store, labels)
    label_attrs = dict(
        zarr.open_group(str(image_store / "labels" / labels), mode="r").attrs.get("grunet", {})
    )
    if label_attrs.get("task") == "semantic":
        from grunet.semantic_predict import instance_only

        raise instance_only(f"label image (labels/{labels})", image_store)
    sample = sample or sample_name(image_store)
    three_d = bool(label_attrs.get("three_d")) and label_data.shape[-3] > 1
    if three_d:  # one row per 3D cell and time point (grunet.measure3d)
        from grunet.measure3d import iter_tables_3d

        batches = iter_tables_3d(
            label_data,
            stack.data,
            channel_names=stack.channel_names,
            pixel_sizes=stack.pixel_sizes,
            anisotropy=(label_attrs.get("options") or {}).get("anisotropy"),
            sample=sample,
            metadata=metadata,
            block=block,
        )
    else:
        batches = iter_tables(
            label_data,
            stack.data,
            channel_names=stack.channel_names,
            pixel_sizes=stack.pixel_sizes,
            sample=sample,
            metadata=metadata,
            block=block,
            progress=progress,
        )
    T, C, Z, Y, X = stack.shape
    provenance = {
        "version": __version__,
        "stage": "measure",
        "source": str(image_store),
        "labels": labels,
        "labels_provenance": label_attrs,
        "model_sha256": label_attrs.get("model_sha256"),
        "object_scale": label_attrs.get("object_scale"),
        "augment": label_attrs.get("augment"),
        "sample": sample,
        "metadata": metadata or {},
        "shape": {"t": T, "c": C, "z": Z, "y": Y, "x": X},
        "pixel_sizes": stack.pixel_sizes,
        "channel_names": stack.channel_names,
        "three_d": three_d,
    }
    write_table(batches, out_parquet, provenance, overwrite=overwrite)
    return out_parquet
