"""Z-stacks with the 2D network: predict XY, XZ and YZ planes of an isotropic stack, combine.

A 2D network sees no z boundary in XY planes: two nuclei stacked in z look like one. Seen from
the side (XZ and YZ planes), a stack resampled to isotropic voxels shows the top and bottom of
every nucleus like any other border. The three views' class probabilities are combined (Cellpose
averages them; the default here, ``"consensus"``, takes background where any view sees it and
the mean interior probability, see :func:`combine_views` and the figures in its notes), so the
result carries boundaries in z as well as in y and x. Seeds and growth then run in 3D
(:mod:`grunet.segmentation`, ``three_d=True``, growth steps weighted by the anisotropy).

Geometry: a stack of ``(Z, Y, X)`` voxels with z step ``anisotropy`` × the xy pixel size is
resized by the object scale ``factor`` in y and x (nuclei get the model's diameter ``D0``, see
:mod:`grunet.scale`) and by ``factor · anisotropy`` in z, so the network sees cubic voxels of
its own scale; the combined probabilities are resized back to the stack's own grid. Resizing is
the separable triangle-kernel resampling of :mod:`grunet.scale`, axis by axis, so a box of the
resized stack is computed exactly from its input support.

Memory: a store is processed in blocks that span all of Z and a YX tile (with a halo of the
network's context, ``Predictor.halo`` network px, on every cut side); a block's resized window is
kept under ``MAX_WINDOW_VOXELS`` (default 2^23 network voxels, about 0.5 GiB of working arrays)
by shrinking the YX tile down to ``MIN_TILE`` px; a stack too deep for that is cut in z too, with
the same halo. Memory is therefore bounded whatever the stack's size. Probabilities of a block
differ from those of the whole stack only by the network's own edge effects within its context
(the 2D planes of a window end at the window); cores are written without blending.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grunet.errors import InputError
from grunet.scale import ObjectScale, axis_matrix

VIEWS = ("xy", "xz", "yz")
MAX_WINDOW_VOXELS = 2**23  # resized voxels of one block's window (all three views share it)
MIN_TILE = 64  # smallest YX tile (stack px) before z is cut too
Box3 = tuple[int, int, int, int, int, int]  # z0, z1, y0, y1, x0, x1


# --------------------------------------------------------------------------- anisotropy


def anisotropy_of(
    pixel_sizes: dict | None, override: float | None = None, where: str | Path | None = None
) -> tuple[float, str]:
    """(z step / xy pixel size, where it came from) of a stack.

    ``override`` (``--anisotropy``) wins; else the metadata's z, y and x pixel sizes; else 1.0
    (``"assumed"``: a stack without physical sizes is taken as isotropic).

    Example:
        >>> anisotropy_of({"z": 2.0, "y": 0.5, "x": 0.5})
        (4.0, 'metadata')
    """
    if override is not None:
        try:
            value = float(override)
        except (TypeError, ValueError):
            raise InputError(where, f"--anisotropy: expected a number, got {override!r}") from None
        if not (math.isfinite(value) and 1 / 64 <= value <= 64):
            raise InputError(
                where, f"--anisotropy: must be a z step / xy pixel ratio in 1/64..64, got {value}"
            )
        return value, "given"
    sizes = pixel_sizes or {}
    z, y, x = (sizes.get(k) for k in ("z", "y", "x"))
    if z and y and x and all(math.isfinite(v) and v > 0 for v in (z, y, x)):
        value = float(z) / math.sqrt(float(y) * float(x))
        if 1 / 64 <= value <= 64:
            return value, "metadata"
    return 1.0, "assumed"


def network_shape(shape: tuple[int, int, int], factor: float, anisotropy: float):
    """(Z, Y, X) of a stack resized to cubic voxels at the model's scale (at least 1 each)."""
    z, y, x = shape
    return (
        max(1, round(z * factor * anisotropy)),
        max(1, round(y * factor)),
        max(1, round(x * factor)),
    )


def segmentation_options_3d(
    options: dict, scale: ObjectScale | None, anisotropy: float
) -> dict[str, float]:
    """Segmentation sizes for a stack: the model's options in the stack's voxels.

    Lengths (``grow_radius``, xy px) scale with the object size; ``max_hole_size`` (per plane)
    with its square; ``min_seed_size`` (a model-scale area, taken one model pixel thick) with its
    cube over the anisotropy. ``min_size`` becomes the volume of a sphere of half the nucleus
    diameter (the same rule whatever the data; pieces smaller than that are fragments, such as
    slivers of nuclei cut by the stack's border). The anisotropy is passed on to growth.
    """
    from grunet.segmentation import SegmentOptions

    defaults = SegmentOptions()
    ratio = 1.0 if scale is None else scale.length_ratio
    diameter = (scale.model_diameter if scale is not None else 0.0) * ratio
    get = options.get
    out = dict(options)
    out["grow_radius"] = int(round(float(get("grow_radius", defaults.grow_radius)) * ratio))
    hole = float(get("max_hole_size", defaults.max_hole_size))
    out["max_hole_size"] = int(round(hole * ratio**2))
    seed = float(get("min_seed_size", defaults.min_seed_size))
    out["min_seed_size"] = int(round(seed * ratio**3 / anisotropy))
    sphere = math.pi / 6 * (diameter / 2) ** 3 / anisotropy
    out["min_size"] = int(max(float(get("min_size", defaults.min_size)), round(sphere)))
    out["anisotropy"] = float(anisotropy)
    return out


# --------------------------------------------------------------------------- resampling


def resample_axis(
    data: np.ndarray, axis: int, n_in: int, n_out: int, lo: int, hi: int, origin: int = 0
) -> np.ndarray:
    """Rows ``[lo, hi)`` of the whole axis (length ``n_in``) resized to ``n_out``.

    ``data`` holds that axis from position ``origin`` and must cover the rows' support.
    """
    matrix, c0, c1 = axis_matrix(n_in, n_out, lo, hi)
    if c0 < origin or c1 - origin > data.shape[axis]:
        raise ValueError(f"data at {origin} ({data.shape[axis]} along {axis}) misses [{c0}, {c1})")
    moved = np.moveaxis(data, axis, 0)[c0 - origin : c1 - origin]
    flat = np.ascontiguousarray(moved, dtype=np.float32).reshape(c1 - c0, -1)
    out = np.asarray(matrix @ flat, dtype=np.float32).reshape((hi - lo,) + moved.shape[1:])
    return np.moveaxis(out, 0, axis)


def support3(in_shape, out_shape, box: Box3) -> Box3:
    """The input box whose voxels the output ``box`` of a 3D resize depends on."""
    out = []
    for k in range(3):
        _, c0, c1 = axis_matrix(in_shape[k], out_shape[k], box[2 * k], box[2 * k + 1])
        out += [c0, c1]
    return tuple(out)


def resample_box(data: np.ndarray, in_shape, out_shape, box: Box3, origin=(0, 0, 0)) -> np.ndarray:
    """The ``box`` of a ``(C, Z, Y, X)`` volume resized from ``in_shape`` to ``out_shape``."""
    out = np.asarray(data, dtype=np.float32)
    for k in range(3):  # z first: the network grid is usually coarsest there
        out = resample_axis(
            out, k + 1, in_shape[k], out_shape[k], box[2 * k], box[2 * k + 1], origin[k]
        )
    return out


# --------------------------------------------------------------------------- the three views


def predict_planes(predictor, planes: np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, classes, h, w)`` of ``N`` equally shaped ``(C, h, w)`` planes.

    Planes go through the network whole, as many per forward pass as the predictor's pixel
    budget allows; a plane larger than that budget is tiled by :meth:`Predictor.predict_plane`.
    """
    n, _, h, w = planes.shape
    out = np.empty((n, predictor.classes, h, w), np.float32)
    budget = predictor.batch_pixels()
    if h * w > budget:
        for i, plane in enumerate(planes):
            out[i] = predictor.predict_plane(plane)
        return out
    prepared = predictor.prepared(n * h * w)
    step = max(1, budget // (h * w))
    for i in range(0, n, step):
        out[i : i + step] = predictor._forward(prepared, list(planes[i : i + step]))
    return out


COMBINE = ("consensus", "mean")


def combine_views(views: list[np.ndarray], how: str = "consensus") -> np.ndarray:
    """One (background, interior, boundary) map from the views' maps (each (3, Z, Y, X)).

    ``"mean"``: the average of the views (Cellpose's rule). ``"consensus"`` (default): a voxel is
    background where *any* view says so (P(background) is the views' maximum) and its interior
    probability is the views' mean, capped so the classes still sum to 1. Why: each 2D view is
    blind along its own normal (XY planes cannot see where a nucleus ends in z, so above and
    below a nucleus they still see its blurred light as foreground; XZ planes are blind in y,
    YZ planes in x), so the foreground is best where all views agree, while seeds (interior)
    are steadiest as the consensus of all three.
    """
    if how == "mean" or len(views) == 1:
        return sum(views[1:], views[0].copy()) / np.float32(len(views))
    if how != "consensus":
        raise ValueError(f"combine must be one of {COMBINE}, got {how!r}")
    background = np.maximum.reduce([v[0] for v in views])
    interior = np.minimum(sum(v[1] for v in views) / np.float32(len(views)), 1 - background)
    out = [background, interior]
    if views[0].shape[0] > 2:
        out.append(np.maximum(1 - background - interior, 0))
    return np.stack(out).astype(np.float32)


def predict_views(predictor, volume: np.ndarray, views=VIEWS, combine: str = "consensus"):
    """Class probabilities ``(classes, Z, Y, X)`` of a network-scale ``(C, Z, Y, X)`` volume
    from the chosen ``views`` ("xy": planes along z, "xz": along y, "yz": along x), combined
    by :func:`combine_views`."""
    unknown = sorted(set(views) - set(VIEWS))
    if unknown or not views:
        raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {views}")
    maps = []
    for view in views:
        axis = {"xy": 1, "xz": 2, "yz": 3}[view]  # the axis the planes are stacked along
        planes = np.moveaxis(volume, axis, 0)  # (N, C, a, b) with (a, b) in z, y, x order
        probs = predict_planes(predictor, np.ascontiguousarray(planes))
        maps.append(np.moveaxis(probs, 0, axis))  # back to (classes, Z, Y, X)
    return combine_views(maps, combine)


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Geometry:
    """A stack's grid, its network-scale grid, and the network context (network px)."""

    shape: tuple[int, int, int]
    factor: float
    anisotropy: float
    context: int

    @property
    def scaled(self) -> tuple[int, int, int]:
        return network_shape(self.shape, self.factor, self.anisotropy)

    def window(self, box: Box3) -> Box3:
        """Network-grid window a core ``box`` (stack voxels) needs: support plus context."""
        sup = support3(self.scaled, self.shape, box)
        out = []
        for k in range(3):
            lo, hi = sup[2 * k] - self.context, sup[2 * k + 1] + self.context
            out += [max(lo, 0), min(hi, self.scaled[k])]
        return tuple(out)


def plan_boxes(
    shape: tuple[int, int, int],
    factor: float,
    anisotropy: float,
    context: int,
    tile: int | None = None,
    max_voxels: int = MAX_WINDOW_VOXELS,
) -> list[Box3]:
    """Core boxes (stack voxels) covering the stack: all of Z if the window allows, YX tiles.

    ``tile`` fixes the YX tile (stack px); by default it is the largest multiple of 32 px (at
    least ``MIN_TILE``) whose all-Z window stays under ``max_voxels`` network voxels. A stack
    too deep even for ``MIN_TILE`` tiles is cut in z as well, into equal slabs.
    """
    Z, Y, X = shape
    geo = Geometry(shape, factor, anisotropy, context)

    def window_voxels(tz: int, t: int) -> int:  # of a box in the middle: halo on every side
        z0, y0, x0 = max(0, (Z - tz) // 2), max(0, (Y - t) // 2), max(0, (X - t) // 2)
        w = geo.window((z0, min(z0 + tz, Z), y0, min(y0 + t, Y), x0, min(x0 + t, X)))
        return (w[1] - w[0]) * (w[3] - w[2]) * (w[5] - w[4])

    tz = Z
    if tile is None:
        tile = max(Y, X)
        while tile > MIN_TILE and window_voxels(Z, tile) > max_voxels:
            tile = max(MIN_TILE, (tile * 3 // 4) // 32 * 32)
        while tz > 1 and window_voxels(tz, tile) > max_voxels:
            tz = max(1, tz * 3 // 4)
    tile = max(1, int(tile))
    boxes = []
    for z0 in range(0, Z, tz):
        for y0 in range(0, Y, tile):
            for x0 in range(0, X, tile):
                boxes.append((z0, min(z0 + tz, Z), y0, min(y0 + tile, Y), x0, min(x0 + tile, X)))
    return boxes


def predict_box(
    predictor, read, geo: Geometry, box: Box3, views=VIEWS, combine: str = "consensus"
) -> np.ndarray:
    """Probabilities ``(classes, *box size)`` of one core box on the stack's grid.

    ``read(box)`` returns the normalised ``(C, z, y, x)`` stack voxels of a box.
    """
    window = geo.window(box)
    source = support3(geo.shape, geo.scaled, window)
    data = read(source)
    volume = resample_box(data, geo.shape, geo.scaled, window, source[::2])
    probs = predict_views(predictor, volume, views, combine)
    return resample_box(probs, geo.scaled, geo.shape, box, window[::2])


def predict_volume(
    predictor,
    volume: np.ndarray,
    *,
    factor: float = 1.0,
    anisotropy: float = 1.0,
    views=VIEWS,
    combine: str = "consensus",
    tile: int | None = None,
    max_voxels: int = MAX_WINDOW_VOXELS,
) -> np.ndarray:
    """Class probabilities ``(classes, Z, Y, X)`` of a normalised ``(C, Z, Y, X)`` stack.

    Args:
        predictor: a :class:`grunet.predict.Predictor`.
        volume: normalised intensities (numpy, or any array sliced on demand).
        factor: object scale of the stack's xy planes (:mod:`grunet.scale`).
        anisotropy: z step / xy pixel size.
        views: planes to predict (default all three); combine: see :func:`combine_views`.
        tile, max_voxels: block plan (see :func:`plan_boxes`).

    Example:
        >>> probs = predict_volume(predictor, stack, factor=0.4, anisotropy=1.1)  # doctest: +SKIP
    """
    shape = tuple(int(n) for n in volume.shape[1:])
    predictor = predictor.for_factor(factor)
    geo = Geometry(shape, factor, anisotropy, predictor.halo)
    out = np.empty((predictor.classes, *shape), np.float32)

    def read(b):
        return np.asarray(volume[:, b[0] : b[1], b[2] : b[3], b[4] : b[5]], np.float32)

    for box in plan_boxes(shape, factor, anisotropy, predictor.halo, tile, max_voxels):
        out[:, box[0] : box[1], box[2] : box[3], box[4] : box[5]] = predict_box(
            predictor, read, geo, box, views, combine
        )
    return out


def iter_boxes(
    predictor, read, geo: Geometry, boxes: list[Box3], views=VIEWS, combine: str = "consensus"
) -> Iterator[tuple[Box3, np.ndarray]]:
    """(box, probabilities) of each core box in turn."""
    for box in boxes:
        yield box, predict_box(predictor, read, geo, box, views, combine)


# --------------------------------------------------------------------------- stores


def stack_scale(predictor, stack, image_store: Path, source, ranges, channels, diameter, um):
    """The object scale of a stack's xy planes (given, or estimated on its middle plane)."""
    from grunet.predict import StorePlane, store_scale

    n_t, _, n_z = stack.shape[:3]
    planes = [StorePlane(source, ranges, channels, t, z) for t in range(n_t) for z in range(n_z)]
    middle = [planes[(n_t // 2) * n_z + n_z // 2]]  # the middle plane of the middle time point
    return store_scale(predictor, stack, image_store, middle, diameter, um)


def predict_store_3d(
    image_store: str | Path,
    out_path: str | Path,
    *,
    model=None,
    anisotropy: float | None = None,
    views=VIEWS,
    combine: str = "consensus",
    tile: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    channels: list[str | int] | None = None,
    diameter: float | None = None,
    diameter_um: float | None = None,
    augment: bool | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Orthogonal-view class probabilities of every Z-stack of a store, as float16 zarr.

    The output has the layout of :func:`grunet.predict.predict_store` (group with array
    ``"probs"``, (T, 3, Z, Y, X), chunks (1, 3, 1, cy, cx)); its attrs add the ``anisotropy``,
    the ``method`` ("orthogonal") and ``views``, and the ``segmentation`` options are those of
    :func:`segmentation_options_3d`, so ``grunet segment`` grows cells in 3D at the right scale.

    Args:
        image_store: ``<sample>.ome.zarr`` written by ``grunet convert``.
        out_path: the ``<sample>.probs.zarr`` group to create.
        model: checkpoint path, Checkpoint, Predictor, or None (the shipped model).
        anisotropy: z step / xy pixel size (None: from the store's pixel sizes, else 1).
        views: planes predicted (default "xy", "xz", "yz"); combine: how their class
            probabilities are combined (:func:`combine_views`).
        tile: YX block size in stack px (default: the largest whose window fits
            ``MAX_WINDOW_VOXELS``).
        batch_size, device, threads, channels, diameter, diameter_um, augment, overwrite,
            progress: as :func:`grunet.predict.predict_store`.

    Returns:
        ``out_path``.
    """
    import torch
    import zarr
    from tqdm import tqdm

    from grunet import __version__
    from grunet.atomic import atomic_output, check_output_free
    from grunet.io import open_store, scratch_compressors
    from grunet.predict import (
        PROBS_NAME,
        _as_predictor,
        _image_array,
        _store_ranges,
        as_float16,
        check_positive,
        select_channels,
    )
    from grunet.preprocess import normalize

    image_store, out_path = Path(image_store), Path(out_path)
    check_output_free(out_path, overwrite)
    if threads:
        torch.set_num_threads(check_positive("threads", threads))
    predictor = _as_predictor(model, device)
    if batch_size is not None:
        predictor.batch_size = check_positive("batch_size", batch_size)
    if augment is not None:
        predictor.augment = bool(augment)
    stack = open_store(image_store)
    n_t, _, n_z, n_y, n_x = stack.shape
    channel_index = select_channels(channels, stack.channel_names, image_store, predictor)
    ranges = _store_ranges(stack, image_store)
    source, (cy, cx) = _image_array(image_store, stack)
    aniso, aniso_source = anisotropy_of(stack.pixel_sizes, anisotropy, image_store)
    scale = stack_scale(
        predictor, stack, image_store, source, ranges, channel_index, diameter, diameter_um
    )
    predictor = predictor.for_factor(scale.factor)
    geo = Geometry((n_z, n_y, n_x), scale.factor, aniso, predictor.halo)
    boxes = plan_boxes(geo.shape, scale.factor, aniso, predictor.halo, tile)
    attrs = {
        "version": __version__,
        "source": str(image_store),
        "shape": [n_t, predictor.classes, n_z, n_y, n_x],
        "axes": "tczyx",
        "classes": ["background", "interior", "boundary"][: predictor.classes],
        "channel_names": [stack.channel_names[i] for i in channel_index],
        "pixel_sizes": dict(stack.pixel_sizes),
        "normalization_ranges": [list(r) for r in ranges],
        "object_scale": scale.describe(),
        "anisotropy": {"value": aniso, "source": aniso_source},
        "method": "orthogonal",
        "views": list(views),
        "combine": combine,
        "segmentation": segmentation_options_3d(predictor.segmentation_options, scale, aniso),
        **predictor.describe(),
    }

    def reader(t):
        def read(b):
            raw = np.asarray(source[t, :, b[0] : b[1], b[2] : b[3], b[4] : b[5]])
            return np.stack([normalize(raw[c], *ranges[c]) for c in channel_index])

        return read

    with atomic_output(out_path, overwrite=overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        target = group.create_array(
            PROBS_NAME,
            shape=(n_t, predictor.classes, n_z, n_y, n_x),
            chunks=(1, predictor.classes, 1, min(cy, n_y), min(cx, n_x)),
            dtype="float16",
            compressors=scratch_compressors(),
        )
        bar = tqdm(total=n_t * len(boxes), desc="predict 3D", unit="block", disable=not progress)
        with bar:
            for t in range(n_t):
                for b, probs in iter_boxes(predictor, reader(t), geo, boxes, views, combine):
                    target[t, :, b[0] : b[1], b[2] : b[3], b[4] : b[5]] = as_float16(probs)
                    bar.update(1)
        group.attrs["grunet"] = {**attrs, **predictor.describe()}
    return out_path


def segment_volume(
    image,
    model=None,
    *,
    anisotropy: float = 1.0,
    diameter: float | None = None,
    views=VIEWS,
    combine: str = "consensus",
    block: int | None = None,
) -> np.ndarray:
    """Instance labels ``(Z, Y, X)`` (uint32) of one in-memory ``(Z, Y, X)``/``(C, Z, Y, X)`` stack.

    The array counterpart of ``grunet run`` on a Z-stack: robust per-channel normalisation,
    object scale (``diameter`` in xy px, else estimated on the middle plane), orthogonal-view
    prediction (:func:`predict_volume`) and 3D seeds and growth with
    :func:`segmentation_options_3d`. ``block`` segments in YX blocks (same labels).

    Example:
        >>> labels = segment_volume(stack, anisotropy=2.0)  # doctest: +SKIP
    """
    from grunet.api import load_model
    from grunet.parallel import synchronous_scheduler
    from grunet.predict import Predictor
    from grunet.preprocess import normalize_channels, percentile_range
    from grunet.scale import estimate_diameter, resolve_scale
    from grunet.segmentation import SegmentOptions, segment_probabilities

    predictor = model if isinstance(model, Predictor) else load_model(model)
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or min(array.shape) == 0:
        raise InputError(None, f"expected a (Z, Y, X) or (C, Z, Y, X) stack, got {array.shape}")
    predictor.check_channels(array.shape[0], None)
    aniso, _ = anisotropy_of(None, anisotropy)
    ranges = [percentile_range(channel) for channel in array]
    normalised = normalize_channels(array, ranges)
    middle = normalised[:, array.shape[1] // 2]
    scale = resolve_scale(
        predictor.object_diameter,
        diameter=diameter,
        estimate=lambda: estimate_diameter(predictor, [middle]).diameter,
    )
    probs = predict_volume(
        predictor, normalised, factor=scale.factor, anisotropy=aniso, views=views, combine=combine
    )
    network = predictor.for_factor(scale.factor)  # the one predict_volume used
    options = segmentation_options_3d(network.segmentation_options, scale, aniso)
    labels = segment_probabilities(
        probs[None], options=SegmentOptions(**options), block=block, three_d=True
    )
    return np.asarray(labels[0, 0].compute(scheduler=synchronous_scheduler()))
