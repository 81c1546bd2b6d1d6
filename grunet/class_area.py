"""Class-area tables: pixels and area of every class in every (t, z) plane of a class map.

One row per ``(sample, t, z, class)``: ``sample, t, z, class_index, class_name, pixels,
area_um2, fraction``. ``area_um2`` is ``pixels`` × the YX pixel area (NaN without pixel sizes);
``fraction`` is the share of the plane's pixels. Every class of the model gets a row, also where
it covers 0 pixels, so tables of different images line up. Parquet (provenance in its schema) +
CSV beside it, written atomically like the cell tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from grunet.atomic import atomic_output, check_output_free
from grunet.errors import InputError

CLASS_AREA_COLUMNS = [
    "sample",
    "t",
    "z",
    "class_index",
    "class_name",
    "pixels",
    "area_um2",
    "fraction",
]


def plane_class_areas(
    class_map,
    class_names: Sequence[str],
    *,
    sample: str,
    t: int = 0,
    z: int = 0,
    pixel_area_um2: float | None = None,
) -> pd.DataFrame:
    """The class-area rows of one 2D class map (numpy or dask).

    Example:
        >>> table = plane_class_areas(np.array([[0, 1], [1, 1]]), ["sky", "road"], sample="a")
        >>> table.pixels.tolist()
        [1, 3]
    """
    import dask.array as da

    from grunet.parallel import default_scheduler

    n = len(class_names)
    flat = da.asarray(class_map).ravel().astype(np.int64)
    counts = np.asarray(da.bincount(flat, minlength=n).compute(scheduler=default_scheduler()))
    if counts.size > n:
        raise InputError(None, f"class map has value {counts.size - 1}, the model has {n} classes")
    total = int(counts.sum())
    area = np.nan if pixel_area_um2 is None else float(pixel_area_um2)
    return pd.DataFrame(
        {
            "sample": sample,
            "t": t,
            "z": z,
            "class_index": np.arange(n, dtype=np.int64),
            "class_name": list(class_names),
            "pixels": counts.astype(np.int64),
            "area_um2": counts * area,
            "fraction": counts / total if total else np.zeros(n),
        },
        columns=CLASS_AREA_COLUMNS,
    )


def _pixel_area(pixel_sizes: dict) -> float | None:
    y, x = pixel_sizes.get("y"), pixel_sizes.get("x")
    if y is None or x is None or not (math.isfinite(y) and math.isfinite(x)):
        return None
    return float(y) * float(x)


def iter_class_areas(
    class_map, class_names: Sequence[str], *, sample: str, pixel_sizes: dict
) -> Iterator[pd.DataFrame]:
    """Rows of a ``(T, 1, Z, Y, X)`` class map, one batch per plane."""
    n_t, _, n_z = class_map.shape[:3]
    area = _pixel_area(pixel_sizes)
    for t in range(n_t):
        for z in range(n_z):
            yield plane_class_areas(
                class_map[t, 0, z], class_names, sample=sample, t=t, z=z, pixel_area_um2=area
            )


def class_area_store(
    image_store: str | Path,
    out_parquet: str | Path,
    *,
    labels: str = "classes",
    sample: str | None = None,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """The class-area table of ``<store>/labels/<labels>`` as Parquet + CSV.

    Args:
        image_store: ``<sample>.ome.zarr`` with a class map (``grunet predict`` of a semantic
            model).
        out_parquet: ``classes/<sample>.parquet``; the CSV is written beside it.
        labels: the class map's name; sample: ``sample`` column (default: the store's name).
        metadata: constant columns (e.g. well, condition); overwrite: replace existing tables.

    Returns:
        The Parquet path.

    Example:
        >>> class_area_store("a.ome.zarr", "classes/a.parquet")  # doctest: +SKIP
    """
    import zarr

    from grunet import __version__
    from grunet import io as gio
    from grunet.class_map import read_class_names
    from grunet.measure import sample_name, write_table

    image_store, out_parquet = Path(image_store), Path(out_parquet)
    if out_parquet.suffix != ".parquet":
        raise InputError(out_parquet, "the table must end in .parquet (a .csv is written beside)")
    check_output_free(out_parquet, overwrite)
    stack = gio.open_store(image_store)
    class_map = gio.read_labels(image_store, labels)
    names = read_class_names(image_store, labels)
    label_attrs = dict(
        zarr.open_group(str(image_store / "labels" / labels), mode="r").attrs.get("grunet", {})
    )
    sample = sample or sample_name(image_store)
    batches = (
        batch.assign(**(metadata or {}))
        for batch in iter_class_areas(
            class_map, names, sample=sample, pixel_sizes=stack.pixel_sizes
        )
    )
    provenance = {
        "version": __version__,
        "stage": "class_areas",
        "source": str(image_store),
        "labels": labels,
        "labels_provenance": label_attrs,
        "model_sha256": label_attrs.get("model_sha256"),
        "sample": sample,
        "classes": names,
        "metadata": metadata or {},
        "pixel_sizes": stack.pixel_sizes,
    }
    write_table(batches, out_parquet, provenance, overwrite=overwrite)
    return out_parquet


def is_class_area_table(path: str | Path) -> bool:
    """True for a class-area Parquet table (by its columns; nothing else is read)."""
    path = Path(path)
    if path.suffix != ".parquet" or not path.is_file():
        return False
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001 - not readable: let the cell-table reader report it
        return False
    return {"class_index", "class_name", "pixels"} <= names


def combine_class_areas(
    tables: Sequence[str | Path], out_csv: str | Path, *, overwrite: bool = False
) -> Path:
    """Concatenate class-area tables into one CSV (e.g. ``OUTDIR/class_areas.csv``).

    A ``.json`` provenance sidecar lists the inputs, like ``counts.csv``'s.

    Example:
        >>> combine_class_areas(["classes/a.parquet"], "class_areas.csv")  # doctest: +SKIP
    """
    import json

    from grunet import __version__

    out_csv = Path(out_csv)
    check_output_free(out_csv, overwrite)
    if not tables:
        raise InputError(None, "no class-area tables given")
    frames = [pd.read_parquet(p) for p in tables]
    table = pd.concat(frames, ignore_index=True, sort=False)
    table = table.sort_values(["sample", "t", "z", "class_index"], kind="stable")
    with atomic_output(out_csv, overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False)
    sidecar = out_csv.with_name(out_csv.name + ".json")
    provenance = {
        "version": __version__,
        "stage": "class_areas",
        "inputs": [str(p) for p in tables],
    }
    with atomic_output(sidecar, overwrite=True) as tmp:
        tmp.write_text(json.dumps(provenance, indent=1) + "\n")
    return out_csv
