"""Canonical OME-Zarr image stores, their labels, and plain zarr arrays (probabilities).

Layout of ``<sample>.ome.zarr`` (OME-NGFF 0.5, zarr v3): array ``"0"`` with axes t, c, z, y, x,
chunks (1, 1, 1, <=1024, <=1024) in the source dtype; OME ``multiscales`` + ``omero`` metadata
(as ``ome_zarr.writer`` writes it) so ome-zarr's reader and napari open it; and a ``"grunet"``
attribute with the provenance and the per-channel normalisation ranges. Labels live in
``labels/<name>`` per the OME-Zarr labels spec. Every write builds a temporary sibling and renames
it into place, so an interrupted write leaves no store that a rerun would trust.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from grunet import __version__
from grunet.atomic import (
    atomic_output,
    check_output_free,
    remove_abandoned_temporaries,
    remove_path,
    temporary_sibling,
)
from grunet.errors import InputError
from grunet.io.progress import progress_callbacks
from grunet.io.ranges import (
    DEFAULT_PERCENTILES,
    ChannelStats,
    block_stats,
    merge_channel_dicts,
    ranges_from_stats,
    tree_reduce,
)
from grunet.io.readers import RGB_NAMES, ome_attrs, read_ome_zarr
from grunet.io.stack import PIXEL_SIZE_KEYS, ImageStack, check_dtype
from grunet.parallel import rechunk_method, threaded_scheduler

MAX_YX_CHUNK = 1024
IMAGE_PATH = "0"


# OME-NGFF version of what this module writes (zarr v3: the metadata sits under the groups'
# "ome" attribute). The metadata is plain JSON built here rather than by ``ome_zarr.writer``:
# importing ome-zarr loads its pydantic models and scikit-image's transforms (0.54 s, 7 % of a
# 2048² ``grunet run``), which every convert and segment job would pay for a few dict entries.
# The tests check that it equals what ome-zarr's writer makes for the same store and that
# ome-zarr-models validates it.
NGFF_VERSION = "0.5"
# Display colours (OME ``omero`` metadata) of RGB images' channels, which the readers name
# after them; other channels of a multi-channel image cycle through a palette.
NAMED_COLOURS = dict(zip(RGB_NAMES, ("FF0000", "00FF00", "0000FF"), strict=True))
PALETTE = ("00FF00", "FF00FF", "00FFFF", "FFFF00")


def display_colours(names: Sequence[str], recorded: Sequence[str | None] = ()) -> list[str]:
    """Each channel's display colour: the one its file records when every channel has one and
    they tell the channels apart (the colours of the acquisition: DAPI blue, GFP green), else
    the colour a channel is named after, else a palette (white for a single channel).

    Recorded colours that do not tell channels apart (all white, as several vendors write when
    none was set) would show two channels in one colour, so they are not used.
    """
    recorded = list(recorded)
    complete = len(recorded) == len(names) and all(recorded)
    if complete and len(set(recorded)) == len(recorded):  # one channel: any colour tells
        return [str(c) for c in recorded]
    palette = ("FFFFFF",) if len(names) == 1 else PALETTE
    return [
        NAMED_COLOURS.get(str(name).lower(), palette[i % len(palette)])
        for i, name in enumerate(names)
    ]


def scratch_compressors() -> tuple:
    """Compressors of arrays written once and read once by the next stage (probabilities).

    Blosc LZ4 with byte shuffle instead of zarr's default Zstd: on real float16 probabilities
    (3 classes, 1024² chunks) writes 2.0-2.1× and reads 1.4-1.7× faster (4096²: 0.35 vs
    0.74 s, 0.07 vs 0.12 s) for 15 % more bytes (45.7 vs 39.7 MB of 101 MB raw;
    ``benchmarks/probs_codec.py``). zarr runs codecs in worker threads, where Blosc
    compresses without threads of its own, so it never competes with torch's.
    Deliverables (images, labels) keep zarr's default.
    """
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)


def image_chunks(shape: Sequence[int], chunks: int | Sequence[int] | None = None) -> tuple:
    """Chunks (1, 1, 1, cy, cx) for a (T, C, Z, Y, X) shape; ``chunks`` may be N, (cy, cx) or 5D."""
    t, c, z, y, x = (int(n) for n in shape)
    if chunks is None:
        cy, cx = MAX_YX_CHUNK, MAX_YX_CHUNK
    elif isinstance(chunks, int):
        cy = cx = chunks
    else:
        cy, cx = (int(n) for n in tuple(chunks)[-2:])
    if cy < 1 or cx < 1:
        raise ValueError(f"chunk sizes must be positive, got {chunks}")
    return (1, 1, 1, min(cy, y), min(cx, x))


def _stream_write(
    data: da.Array,
    target: zarr.Array,
    *,
    stats: bool = False,
    check_labels: str | None = None,
    progress: bool = False,
    desc: str = "writing",
) -> dict[int, ChannelStats]:
    """Write ``data`` into ``target`` block by block (memory bounded); per-channel stats if asked.

    Each task reads one block, writes it to its own zarr chunk(s) and returns small statistics;
    the statistics are merged in a tree, so memory stays bounded whatever the image size.
    """
    data = data.rechunk(target.chunks, method=rechunk_method())
    blocks = data.to_delayed()
    starts = [np.cumsum((0,) + c) for c in data.chunks]
    # Explicit keys and one shared node for the target: tokenizing the zarr array for every
    # block would dominate graph construction for large images (~10k blocks at 20 GB).
    name = f"write-{uuid.uuid4().hex}"
    shared_target = dask.delayed(target, name=f"target-{name}")
    write = dask.delayed(_write_block, pure=False)
    parts = []
    for n, index in enumerate(np.ndindex(blocks.shape)):
        region = tuple(slice(int(s[i]), int(s[i + 1])) for s, i in zip(starts, index, strict=True))
        channel = int(starts[1][index[1]]) if data.ndim == 5 else 0
        args = (blocks[index], shared_target, region, channel, stats, check_labels)
        parts.append(write(*args, dask_key_name=f"{name}-{n}"))
    result = tree_reduce(parts, merge_channel_dicts)
    # Our own pool, so that after a failure we wait for the writes still running before the
    # caller removes the temporary store (else a late write would re-create part of it).
    workers = dask.config.get("num_workers", None) or os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        (merged,) = dask.compute(
            result,
            scheduler=threaded_scheduler(),
            pool=pool,
            callbacks=progress_callbacks(progress, desc),
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return merged if isinstance(merged, dict) else {}


def _write_block(block, target, region, channel, stats, check_labels):
    block = np.asarray(block)
    out = {}
    if check_labels is not None:
        if block.size:
            low, high = block.min(), block.max()
            if low < 0:
                raise InputError(check_labels, f"labels contain negative values (min {low})")
            if high > np.iinfo(target.dtype).max:
                raise InputError(check_labels, f"label {high} does not fit {target.dtype}")
        block = block.astype(target.dtype, copy=False)
    target[region] = block
    if stats:
        out[channel] = block_stats(block)
    return out


def _nonfinite_error(source: str, stats: dict[int, ChannelStats], names: list[str]) -> None:
    bad = {c: s for c, s in stats.items() if s.n_nan or s.n_inf}
    if not bad:
        return
    total = sum(s.n_nan + s.n_inf for s in stats.values())
    size = sum(s.n + s.n_nan + s.n_inf for s in stats.values())
    detail = ", ".join(
        f"channel {names[c]}: {s.n_nan} NaN, {s.n_inf} inf" for c, s in sorted(bad.items())
    )
    raise InputError(
        source,
        f"{total} of {size} pixel values are NaN or infinite ({detail}); "
        "replace them (e.g. with 0) before converting",
    )


def _ome_axes(pixel_sizes: dict[str, float | None]) -> list[dict[str, str]]:
    axes = []
    for name, kind, unit in (
        ("t", "time", "second"),
        ("c", "channel", None),
        ("z", "space", "micrometer"),
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ):
        axis = {"name": name, "type": kind}
        if unit and pixel_sizes.get(name) is not None:
            axis["unit"] = unit
        axes.append(axis)
    return axes


def _ome_scale(pixel_sizes: dict[str, float | None]) -> list[float]:
    get = pixel_sizes.get
    return [
        float(get("t") or 1.0),
        1.0,
        float(get("z") or 1.0),
        float(get("y") or 1.0),
        float(get("x") or 1.0),
    ]


def pyramid_levels(yx: Sequence[int], requested: int | None) -> int:
    """Number of extra pyramid levels: ``requested``, or (None) down to <= 1024 px."""
    y, x = (int(n) for n in yx)
    if requested is not None:
        if requested < 0:
            raise ValueError(f"pyramid levels must be >= 0, got {requested}")
        return min(requested, max(0, int(np.log2(max(1, min(y, x))))))
    levels = 0
    while max(y, x) / 2**levels > MAX_YX_CHUNK and min(y, x) / 2 ** (levels + 1) >= 16:
        levels += 1
    return levels


def _write_pyramid(
    root: zarr.Group,
    base: zarr.Array,
    levels: int,
    *,
    labels: bool = False,
    progress: bool = False,
    desc: str = "",
) -> None:
    """Levels "1".."levels", streamed from the store: each the 2x2 mean of the previous one,
    or for ``labels`` the top-left pixel of each 2x2 (a label that exists, never a mean of two).
    Level shapes are the previous ones halved (rounded down), for images and labels alike."""
    previous = base
    for level in range(1, levels + 1):
        source = da.from_zarr(previous)
        y, x = source.shape[-2] // 2 * 2, source.shape[-1] // 2 * 2
        if labels:
            down = source[..., :y:2, :x:2]
        else:
            source = source[..., :y, :x].rechunk(
                (1, 1, 1, MAX_YX_CHUNK, MAX_YX_CHUNK), method=rechunk_method()
            )
            down = da.coarsen(np.mean, source, {3: 2, 4: 2})
            if base.dtype.kind in "ui":
                down = da.rint(down)
            down = down.astype(base.dtype)
        target = root.create_array(
            str(level),
            shape=down.shape,
            chunks=image_chunks(down.shape),
            dtype=base.dtype,
            fill_value=0,
            dimension_names=list("tczyx"),
        )
        _stream_write(down, target, progress=progress, desc=f"{desc} level {level}")
        previous = target


def _write_ome_metadata(
    group: zarr.Group,
    pixel_sizes: dict[str, float | None],
    name: str,
    channel_names: list[str] | None = None,
    windows: list[tuple[float, float, float, float]] | None = None,
    levels: int = 0,
    image_label: dict[str, Any] | None = None,
    colours: list[str | None] | None = None,
) -> None:
    """OME ``multiscales`` of ``levels`` + 1 resolutions, ``omero`` channels where their names
    and display windows are given, ``image-label`` (with its entries) for a label image."""
    datasets = []
    for level in range(levels + 1):
        scale = _ome_scale(pixel_sizes)
        scale[3] *= 2**level
        scale[4] *= 2**level
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": scale}],
            }
        )
    ome = {
        "version": NGFF_VERSION,
        "multiscales": [{"datasets": datasets, "name": name, "axes": _ome_axes(pixel_sizes)}],
    }
    if channel_names is not None and windows is not None:
        channels = [
            {
                "label": label,
                "color": colour,
                "active": True,
                "window": {"min": mn, "max": mx, "start": lo, "end": hi},
            }
            for label, colour, (mn, mx, lo, hi) in zip(
                channel_names, display_colours(channel_names, colours or ()), windows
            )
        ]
        ome["omero"] = {"channels": channels, "rdefs": {"model": "greyscale"}}
    if image_label is not None:
        ome["image-label"] = {"version": NGFF_VERSION, "source": {"image": "../../"}, **image_label}
    group.attrs["ome"] = ome


def write_image(
    path: str | Path,
    stack: ImageStack,
    *,
    chunks: int | Sequence[int] | None = None,
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    pyramid: int | None = None,
    progress: bool = False,
) -> Path:
    """Write an image as a canonical OME-Zarr store, atomically, with normalisation ranges.

    The image is streamed chunk by chunk (memory bounded); in the same pass NaN/inf values are
    counted (any → :class:`InputError`, nothing written) and per-channel histograms collected,
    from which the robust ``percentiles`` of each channel are stored under
    ``attrs["grunet"]["normalization"]`` (exact for 8/16-bit integers; see
    :mod:`grunet.io.ranges` for the error bound of other types).

    Args:
        path: the ``<sample>.ome.zarr`` directory to create.
        stack: the image (any size; read lazily).
        chunks: YX chunk size: N, (cy, cx) or a 5-tuple; default (1, 1, 1, 1024, 1024).
        overwrite: replace an existing store (else an existing one is an error).
        attrs: extra entries for the ``"grunet"`` attribute (e.g. conversion options).
        percentiles: the normalisation percentiles (low, high).
        pyramid: extra resolution levels "1", "2", ... (2x mean-downsampled in Y and X) for
            viewers; None = as many as bring the larger of Y, X to at most 1024 (none for
            images up to 1024 px). Every stage reads level "0".
        progress: show a tqdm bar on stderr.

    Returns:
        The path of the store.

    Example:
        >>> write_image("a.ome.zarr", read_image("a.tif"))  # doctest: +SKIP
    """
    path = Path(path)
    check_output_free(path, overwrite)
    check_dtype(stack.dtype, stack.source or None)
    remove_abandoned_temporaries(path)
    data = stack.data
    chunk_shape = image_chunks(data.shape, chunks)
    source = stack.source or str(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        target = root.create_array(
            IMAGE_PATH,
            shape=data.shape,
            chunks=chunk_shape,
            dtype=data.dtype,
            fill_value=0,
            dimension_names=list("tczyx"),
        )
        stats = _stream_write(data, target, stats=True, progress=progress, desc=path.name)
        _nonfinite_error(source, stats, stack.channel_names)
        exact = data.dtype.kind in "ui" and data.dtype.itemsize <= 2
        ranges = ranges_from_stats(
            da.from_zarr(target),
            stats,
            percentiles,
            callbacks=progress_callbacks(progress and not exact, f"{path.name} ranges"),
        )
        windows = [
            (stats[c].min, stats[c].max, lo, hi)
            if np.isfinite(stats[c].min)
            else (0.0, 1.0, lo, hi)
            for c, (lo, hi) in enumerate(ranges)
        ]
        levels = pyramid_levels(data.shape[-2:], pyramid)
        _write_pyramid(root, target, levels, progress=progress, desc=path.name)
        name = path.name.removesuffix(".zarr").removesuffix(".ome")
        _write_ome_metadata(
            root,
            stack.pixel_sizes,
            name,
            stack.channel_names,
            windows,
            levels=levels,
            colours=stack.channel_colours,
        )
        root.attrs["grunet"] = {
            **(attrs or {}),
            "version": __version__,
            "source": str(stack.source),
            "channel_names": list(stack.channel_names),
            "channel_colours": list(stack.channel_colours),
            "pixel_sizes": {k: stack.pixel_sizes.get(k) for k in PIXEL_SIZE_KEYS},
            "normalization": {
                "percentiles": [float(p) for p in percentiles],
                "ranges": [[lo, hi] for lo, hi in ranges],
            },
        }
    return path


def _open_group(path: Path, what: str = "store") -> zarr.Group:
    if not path.exists():
        raise InputError(path, f"{what} does not exist")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise InputError(path, f"not a readable zarr {what} ({err})") from None
    if not isinstance(node, zarr.Group):
        raise InputError(path, f"expected a zarr group ({what}), found an array")
    return node


def open_store(path: str | Path) -> ImageStack:
    """Open an OME-Zarr image store (as written by :func:`write_image`) lazily.

    Args:
        path: the ``.ome.zarr`` directory.

    Returns:
        An :class:`ImageStack`; ``attrs`` holds the ``"grunet"`` attributes (normalisation ranges).

    Example:
        >>> stack = open_store("a.ome.zarr")  # doctest: +SKIP
        >>> lo, hi = stack.normalization_ranges[0]  # doctest: +SKIP
    """
    path = Path(path)
    group = _open_group(path)
    if "multiscales" not in ome_attrs(group):
        raise InputError(path, "not an OME-Zarr image (no 'multiscales' metadata)")
    return read_ome_zarr(path, group)


def _write_json_atomic(path: Path, content: dict) -> None:
    tmp = temporary_sibling(path)
    try:
        tmp.write_text(json.dumps(content, indent=2))
        os.replace(tmp, path)
    finally:
        remove_path(tmp)


def _list_label(store: Path, name: str) -> None:
    """Add ``name`` to the labels group's list; zarr.json is replaced atomically."""
    meta_path = store / "labels" / "zarr.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        meta = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    ome = meta.setdefault("attributes", {}).setdefault("ome", {})
    ome.setdefault("version", NGFF_VERSION)
    names = list(ome.get("labels", []))
    if name not in names:
        names.append(name)
    ome["labels"] = names
    _write_json_atomic(meta_path, meta)


def write_labels(
    store: str | Path,
    labels: np.ndarray | da.Array,
    *,
    name: str = "cells",
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    dtype: Any = np.uint32,
    image_label: dict[str, Any] | None = None,
) -> Path:
    """Write instance labels into ``store/labels/<name>`` (OME-Zarr labels spec), atomically.

    The label image is built in a temporary sibling inside ``labels/`` and renamed into place;
    only then is ``name`` added to the labels group's list, so readers never see a partial one.

    Args:
        store: a canonical image store (``.ome.zarr``).
        labels: integer labels (T, 1, Z, Y, X) or (T, Z, Y, X) matching the image; stored uint32.
        name: the label image's name.
        attrs: entries for its ``"grunet"`` attribute (provenance).
        overwrite: replace an existing label image of that name.
        progress: show a tqdm bar on stderr.
        dtype: stored integer type (uint32 for instances; class maps use uint8/uint16).
        image_label: extra OME-NGFF ``image-label`` entries (``colors``, ``properties``).

    Returns:
        The path ``store/labels/<name>``.

    Example:
        >>> write_labels("a.ome.zarr", labels, attrs={"model_sha256": sha})  # doctest: +SKIP
    """
    store = Path(store)
    image = open_store(store)
    if not (store / "zarr.json").exists():
        raise InputError(store, "labels can only be added to an OME-Zarr 0.5 (zarr v3) store")
    # as many resolutions as the image (the OME-Zarr labels spec; napari pairs them up)
    levels = len(ome_attrs(_open_group(store))["multiscales"][0]["datasets"]) - 1
    labels = da.asarray(labels)
    t, _c, z, y, x = image.shape
    if labels.ndim == 4:
        labels = labels[:, None]
    got = tuple(int(n) for n in labels.shape)
    if labels.ndim != 5 or got[1] != 1 or got[:1] + got[2:] != (t, z, y, x):
        raise InputError(
            store,
            f"labels shape {tuple(labels.shape)} does not match the image: expected "
            f"(T, Z, Y, X) = {(t, z, y, x)} or (T, 1, Z, Y, X)",
        )
    if labels.dtype.kind not in "ui":
        raise InputError(store, f"labels must be integers, got {labels.dtype}")
    final = store / "labels" / name
    check_output_free(final, overwrite)
    remove_abandoned_temporaries(final)
    (store / "labels").mkdir(exist_ok=True)
    if not (store / "labels" / "zarr.json").exists():
        _write_json_atomic(
            store / "labels" / "zarr.json",
            {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"labels": []}}},
        )
    with atomic_output(final, overwrite=overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        target = group.create_array(
            IMAGE_PATH,
            shape=labels.shape,
            chunks=image_chunks(labels.shape, image.data.chunksize[-2:]),
            dtype=dtype,
            fill_value=0,
            dimension_names=list("tczyx"),
        )
        _stream_write(
            labels, target, check_labels=str(store), progress=progress, desc=f"labels {name}"
        )
        _write_pyramid(group, target, levels, labels=True, progress=progress, desc=name)
        _write_ome_metadata(
            group, image.pixel_sizes, name, levels=levels, image_label=image_label or {}
        )
        group.attrs["grunet"] = {**(attrs or {}), "version": __version__}
    _list_label(store, name)
    return final


def read_labels(store: str | Path, name: str = "cells") -> da.Array:
    """Lazily read ``store/labels/<name>`` as a dask array (T, 1, Z, Y, X).

    Example:
        >>> labels = read_labels("a.ome.zarr")  # doctest: +SKIP
    """
    store = Path(store)
    path = store / "labels" / name
    if not store.exists():
        raise InputError(store, "store does not exist")
    if not path.is_dir():
        raise InputError(store, f"has no label image {name!r} (labels/{name} is missing)")
    group = _open_group(path, "label image")
    multiscales = ome_attrs(group).get("multiscales") or [{"datasets": [{"path": IMAGE_PATH}]}]
    array_path = multiscales[0]["datasets"][0]["path"]
    data = da.from_zarr(group[array_path])
    if data.ndim == 4:
        data = data[:, None]
    return data


def write_array(
    path: str | Path,
    data: np.ndarray | da.Array,
    *,
    name: str,
    chunks: Sequence[int] | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write one array into a new plain zarr group (e.g. ``<sample>.probs.zarr``), atomically.

    Args:
        path: the group directory to create.
        data: numpy or dask array (streamed chunk by chunk).
        name: the array's name inside the group (e.g. ``"probs"``).
        chunks: zarr chunks (default: the dask chunks, or the whole array for numpy).
        attrs: the group's ``"grunet"`` attribute (the version is added).
        overwrite: replace an existing group.
        progress: show a tqdm bar on stderr.

    Returns:
        The group path.

    Example:
        >>> write_array("p.zarr", probs, name="probs", attrs={"tile": 512})  # doctest: +SKIP
    """
    path = Path(path)
    data = da.asarray(data)
    if chunks is None:
        chunks = data.chunksize
    chunks = tuple(min(int(c), int(n)) for c, n in zip(chunks, data.shape, strict=True))
    if attrs and set(attrs) == {"grunet"}:
        attrs = attrs["grunet"]
    check_output_free(path, overwrite)
    remove_abandoned_temporaries(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        target = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype)
        _stream_write(data, target, progress=progress, desc=path.name)
        group.attrs["grunet"] = {**(attrs or {}), "version": __version__}
    return path


def read_array(path: str | Path, name: str) -> tuple[da.Array, dict[str, Any]]:
    """Lazily read array ``name`` of a plain zarr group and the group's ``"grunet"`` attribute.

    Example:
        >>> probs, attrs = read_array("a.probs.zarr", "probs")  # doctest: +SKIP
    """
    path = Path(path)
    group = _open_group(path, "group")
    if name not in group:
        raise InputError(path, f"has no array {name!r} (found: {sorted(group.array_keys())})")
    return da.from_zarr(group[name]), dict(group.attrs.get("grunet", {}))
