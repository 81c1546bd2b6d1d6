"""Per-cell measurements of 3D labels: one row per cell (3D object) and time point, exact.

Every column is a sum, a minimum or a maximum over the cell's voxels (volume, centroid sums,
bounding box, intensity sums/min/max), so each block (all of Z, a YX tile) contributes partial
values that combine exactly: a cell crossing block borders gets the same row as when the stack
is measured whole. Memory: one block of labels and image at a time, plus a few numbers per
(cell, block) pair.

Columns: ``sample, t, z, label, centroid_{z,y,x}`` (voxels) and ``_um``, ``bbox_{min,max}_{z,y,x}``
(max exclusive, like regionprops), ``volume`` (voxels), ``volume_um3``, ``equivalent_diameter``
(diameter of the sphere of the cell's volume, in xy px: z voxels count ``anisotropy`` xy px) and
``equivalent_diameter_um``, and per channel ``{mean,min,max,integrated}_intensity_<channel>``.
µm columns are NaN where the pixel sizes are unknown. The 2D tables' shared columns keep their
meaning so downstream code reads both: ``z`` is the plane of the cell's centroid (inside its
bounding box) and ``area`` its voxel count, as ``regionprops`` names it in 3D (= ``volume``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from grunet.measure import channel_column_names

AXES = ("z", "y", "x")


def table_columns_3d(channel_names: Sequence[str]) -> list[str]:
    """The 3D table's measurement columns, in order (metadata columns come after)."""
    columns = ["sample", "t", "z", "label"]
    columns += [f"centroid_{a}" for a in AXES] + [f"centroid_{a}_um" for a in AXES]
    columns += [f"bbox_min_{a}" for a in AXES] + [f"bbox_max_{a}" for a in AXES]
    columns += ["area", "volume", "volume_um3", "equivalent_diameter", "equivalent_diameter_um"]
    names = channel_column_names(channel_names)
    for prefix in ("mean_intensity", "min_intensity", "max_intensity", "integrated_intensity"):
        columns += [f"{prefix}_{c}" for c in names]
    return columns


def _block_stats(labels: np.ndarray, image: np.ndarray | None, origin) -> pd.DataFrame:
    """Partial sums/min/max per label of one (Z, y, x) block at ``origin`` (z0, y0, x0)."""
    where = np.nonzero(labels)
    if where[0].size == 0:
        return pd.DataFrame()
    ids = labels[where]
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    coords = [w[order].astype(np.int64) + o for w, o in zip(where, origin)]
    uniq, start = np.unique(ids, return_index=True)
    data: dict[str, Any] = {"label": uniq, "n": np.diff(np.append(start, ids.size))}
    for axis, c in zip(AXES, coords):
        data[f"sum_{axis}"] = np.add.reduceat(c.astype(np.float64), start)
        data[f"min_{axis}"] = np.minimum.reduceat(c, start)
        data[f"max_{axis}"] = np.maximum.reduceat(c, start) + 1
    if image is not None:
        for k, channel in enumerate(image):
            values = channel[where][order].astype(np.float64)
            data[f"isum_{k}"] = np.add.reduceat(values, start)
            data[f"imin_{k}"] = np.minimum.reduceat(values, start)
            data[f"imax_{k}"] = np.maximum.reduceat(values, start)
    return pd.DataFrame(data)


def _combine(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame()
    frame = pd.concat(parts, ignore_index=True)
    how = {}
    for c in frame.columns.drop("label"):
        kind = c.split("_")[0].lstrip("i")  # n, sum/isum, min/imin, max/imax
        how[c] = "sum" if kind in ("n", "sum") else kind
    return frame.groupby("label", sort=True).agg(how).reset_index()


def _rows(stats: pd.DataFrame, n_channels: int, names, pixel_sizes, anisotropy) -> pd.DataFrame:
    n = stats["n"].to_numpy(np.float64) if len(stats) else np.zeros(0)
    size = {a: (pixel_sizes.get(a) or np.nan) for a in AXES}
    out: dict[str, Any] = {"label": stats["label"].to_numpy(np.uint32) if len(stats) else []}
    for a in AXES:
        out[f"centroid_{a}"] = stats[f"sum_{a}"].to_numpy() / n if len(stats) else n
    for a in AXES:
        out[f"centroid_{a}_um"] = out[f"centroid_{a}"] * size[a]
    for kind in ("min", "max"):
        for a in AXES:
            col = stats[f"{kind}_{a}"].to_numpy(np.int64) if len(stats) else n.astype(np.int64)
            out[f"bbox_{kind}_{a}"] = col
    plane = np.rint(out["centroid_z"]) if len(stats) else n
    low, high = out["bbox_min_z"], out["bbox_max_z"] - 1
    out["z"] = np.clip(plane, low, np.maximum(low, high)).astype(np.int32)
    out["area"] = n.astype(np.int64)
    out["volume"] = n.astype(np.int64)
    out["volume_um3"] = n * size["z"] * size["y"] * size["x"]
    out["equivalent_diameter"] = np.cbrt(6.0 * n * anisotropy / np.pi)
    out["equivalent_diameter_um"] = np.cbrt(6.0 * out["volume_um3"] / np.pi)
    columns = channel_column_names(names)
    for k, c in enumerate(columns[:n_channels]):
        isum = stats[f"isum_{k}"].to_numpy() if len(stats) else n
        out[f"mean_intensity_{c}"] = isum / n if len(stats) else n
        out[f"min_intensity_{c}"] = stats[f"imin_{k}"].to_numpy() if len(stats) else n
        out[f"max_intensity_{c}"] = stats[f"imax_{k}"].to_numpy() if len(stats) else n
        out[f"integrated_intensity_{c}"] = isum
    return pd.DataFrame(out)


def iter_tables_3d(
    labels,
    image=None,
    *,
    channel_names: Sequence[str] | None = None,
    pixel_sizes: dict[str, float | None] | None = None,
    anisotropy: float | None = None,
    sample: str = "sample",
    metadata: dict[str, Any] | None = None,
    block: int | None = None,
) -> Iterator[pd.DataFrame]:
    """One DataFrame per time point: a row per 3D cell, sorted by label.

    Args:
        labels: (T, 1, Z, Y, X) or (T, Z, Y, X) labels (numpy, dask or zarr).
        image: (T, C, Z, Y, X) intensities or None (no intensity columns).
        channel_names: one per channel (default ch0, ch1, ...).
        pixel_sizes: {"z", "y", "x"} in µm; missing sizes give NaN µm columns.
        anisotropy: z step / xy pixel size for ``equivalent_diameter`` (default: from the
            pixel sizes, else 1).
        sample, metadata: the ``sample`` column and extra constant columns.
        block: YX block size (default 256); blocks span all of Z.
    """
    from grunet.predict3d import anisotropy_of

    if labels.ndim == 5:
        labels = labels[:, 0]
    n_t, n_z, n_y, n_x = labels.shape
    n_c = 0 if image is None else int(image.shape[1])
    names = list(channel_names or [f"ch{i}" for i in range(n_c)])
    pixel_sizes = pixel_sizes or {}
    aniso = anisotropy if anisotropy is not None else anisotropy_of(pixel_sizes)[0]
    side = int(block or 256)
    metadata = metadata or {}
    columns = table_columns_3d(names[:n_c]) + list(metadata)
    for t in range(n_t):
        parts = []
        for y0 in range(0, n_y, side):
            for x0 in range(0, n_x, side):
                ys, xs = slice(y0, min(y0 + side, n_y)), slice(x0, min(x0 + side, n_x))
                lab = np.asarray(labels[t, :, ys, xs])
                img = None if image is None else np.asarray(image[t, :, :, ys, xs])
                parts.append(_block_stats(lab, img, (0, y0, x0)))
        frame = _rows(_combine(parts), n_c, names, pixel_sizes, aniso)
        frame.insert(0, "t", np.full(len(frame), t, np.int32))
        frame.insert(0, "sample", sample)
        for key, value in metadata.items():
            frame[key] = value
        yield frame[columns]


def measure_stack_3d(labels, image=None, **options) -> pd.DataFrame:
    """The whole 3D per-cell table (see :func:`iter_tables_3d` for the arguments).

    Example:
        >>> table = measure_stack_3d(labels, image, pixel_sizes=sizes)  # doctest: +SKIP
    """
    return pd.concat(list(iter_tables_3d(labels, image, **options)), ignore_index=True)
