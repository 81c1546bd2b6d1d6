"""Class maps of semantic models: argmax of N-class probabilities → ``labels/classes``.

A class map holds the class index (0..N-1) of every pixel, uint8 for N ≤ 255 classes and uint16
above. The checkpoint's ignore index marks unlabelled training pixels and is never predicted.
In the store it is an OME-Zarr label image whose ``image-label`` metadata carries the class
colours (``colors``: ``{"label-value": i, "rgba": [r, g, b, 255]}``) and names (``properties``:
``{"label-value": i, "class": name}``), so napari shows every class in its own colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grunet.errors import InputError
from grunet.task import SemanticClass

CLASS_MAP_NAME = "classes"
# colours of classes whose checkpoint gives none (tab10, then grey)
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def class_map_dtype(n_classes: int) -> np.dtype:
    """uint8 for up to 255 classes, else uint16."""
    return np.dtype(np.uint8 if n_classes <= 255 else np.uint16)


def argmax_classes(probs: np.ndarray, ignore_index: int | None = None, axis: int = 0) -> np.ndarray:
    """Class map of probabilities (or scores) with the classes along ``axis``.

    Args:
        probs: ``(N, ...)`` scores (any float type).
        ignore_index: a label value never predicted; if it is one of the N outputs, that output
            is left out of the argmax.
        axis: the class axis.

    Returns:
        The argmax without ``axis``, as :func:`class_map_dtype` of N.

    Example:
        >>> argmax_classes(np.array([[0.2], [0.8]])).tolist()
        [1]
    """
    probs = np.asarray(probs)
    n = probs.shape[axis]
    if ignore_index is not None and 0 <= ignore_index < n:
        probs = probs.astype(np.float32, copy=True)
        index = [slice(None)] * probs.ndim
        index[axis] = ignore_index
        probs[tuple(index)] = -np.inf
    return np.argmax(probs, axis=axis).astype(class_map_dtype(n))


def class_colours(classes: list[SemanticClass]) -> list[tuple[int, int, int]]:
    """RGB of every class: the checkpoint's colour, else a palette colour."""
    rgb = []
    for i, cls in enumerate(classes):
        colour = cls.rgb() or SemanticClass(cls.name, PALETTE[i % len(PALETTE)]).rgb()
        rgb.append(colour)
    return rgb


def image_label_metadata(classes: list[SemanticClass]) -> dict:
    """OME-NGFF ``image-label`` entries (colours and names) of a class map."""
    colours = class_colours(classes)
    return {
        "colors": [{"label-value": i, "rgba": [*rgb, 255]} for i, rgb in enumerate(colours)],
        "properties": [{"label-value": i, "class": c.name} for i, c in enumerate(classes)],
    }


def read_class_names(store: str | Path, name: str = CLASS_MAP_NAME) -> list[str]:
    """Class names stored with a class map (``image-label.properties``)."""
    import zarr

    from grunet.io.readers import ome_attrs

    group = zarr.open_group(str(Path(store) / "labels" / name), mode="r")
    properties = (ome_attrs(group).get("image-label") or {}).get("properties") or []
    names = {int(p["label-value"]): str(p.get("class", "")) for p in properties}
    return [names.get(i, f"class_{i}") for i in range(max(names, default=-1) + 1)]


def write_class_map(
    probs_path: str | Path,
    image_store: str | Path,
    classes: list[SemanticClass],
    *,
    ignore_index: int | None = None,
    name: str = CLASS_MAP_NAME,
    attrs: dict | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write the class map of a probabilities zarr into ``image_store/labels/<name>``.

    The argmax runs chunk by chunk (every chunk holds all classes), so memory stays flat.

    Args:
        probs_path: ``<sample>.probs.zarr`` of a semantic model (``grunet predict``).
        image_store: the ``<sample>.ome.zarr`` it was predicted from.
        classes: the model's classes (names, colours), one per probability channel.
        ignore_index: never predicted (see :func:`argmax_classes`).
        name: label image name; attrs: provenance; overwrite: replace an existing map.
        progress: tqdm bar on stderr.

    Returns:
        The label image's path.

    Example:
        >>> write_class_map("a.probs.zarr", "a.ome.zarr", classes)  # doctest: +SKIP
    """
    import dask.array as da

    from grunet.io import read_array, write_labels
    from grunet.parallel import rechunk_method

    probs, probs_attrs = read_array(probs_path, "probs")
    if probs.shape[1] != len(classes):
        raise InputError(
            probs_path, f"has {probs.shape[1]} classes, the model names {len(classes)}"
        )
    probs = probs.rechunk({1: -1}, method=rechunk_method())
    dtype = class_map_dtype(len(classes))
    labels = da.map_blocks(
        lambda block: argmax_classes(block, ignore_index, axis=1)[:, None],
        probs,
        dtype=dtype,
        chunks=((probs.chunks[0]), (1,), *probs.chunks[2:]),
    )
    provenance = {
        "task": "semantic",
        "classes": [c.name for c in classes],
        "ignore_index": ignore_index,
        "probabilities": str(probs_path),
        **{k: probs_attrs.get(k) for k in ("model_sha256", "model_path", "object_scale")},
        **(attrs or {}),
    }
    return write_labels(
        image_store,
        labels,
        name=name,
        attrs=provenance,
        overwrite=overwrite,
        progress=progress,
        dtype=dtype,
        image_label=image_label_metadata(classes),
    )
