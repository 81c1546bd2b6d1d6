"""Intensity normalisation and training targets from instance labels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from grunet.saturation import saturated_count, stands_apart

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
DEFAULT_PERCENTILES = (1.0, 99.8)
# Normalised intensities are capped here: the network never saw much above 1 in training, and
# a saturated nucleus at 10x the range makes it see halos and ghosts around the nucleus.
NORMALISED_CEILING = 1.5


def percentile_range(
    image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> tuple[float, float]:
    """Robust (low, high) intensities of an in-memory array (finite values only).

    A saturated plateau (many pixels at the maximum, far above the rest: see
    :mod:`grunet.saturation`) is left out, so that a few clipped nuclei do not set the top of
    the range for all the others.
    """
    values = np.asarray(image, dtype=np.float32)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    top = values.max()
    at_max = values == top
    if saturated_count(values.size, int(np.count_nonzero(at_max))):
        low, high = np.percentile(values[~at_max], percentiles)
        if stands_apart(low, high, top):
            return float(low), float(high)
    low, high = np.percentile(values, percentiles)
    return float(low), float(high)


def normalize(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] to [0, 1] linearly; float32. Values below stay as they are, values above
    are capped at ``NORMALISED_CEILING``.

    A constant image (high <= low) maps to zeros rather than dividing by zero.
    """
    image = np.asarray(image, dtype=np.float32)
    scale = high - low
    if not np.isfinite(scale) or scale <= 1e-12:
        return np.zeros_like(image)
    out = (image - np.float32(low)) / np.float32(scale)
    return np.minimum(out, np.float32(NORMALISED_CEILING), out=out)


def normalize_channels(
    image: np.ndarray, ranges: list[tuple[float, float]] | None = None
) -> np.ndarray:
    """Normalise a (C, ...) array channel by channel; ranges default to each channel's own."""
    image = np.asarray(image)
    if ranges is None:
        ranges = [percentile_range(channel) for channel in image]
    return np.stack([normalize(ch, lo, hi) for ch, (lo, hi) in zip(image, ranges)])


def edge_and_classes(labels: np.ndarray, boundary_width: int) -> tuple[np.ndarray, np.ndarray]:
    """(1-px inner edge mask, classes with a ``boundary_width`` boundary) of a 2D label plane."""
    foreground = labels > 0
    edge = find_boundaries(labels, connectivity=1, mode="inner") & foreground
    boundary = edge
    if boundary_width > 1:
        boundary = ndi.binary_dilation(edge, iterations=boundary_width - 1) & foreground
    classes = np.where(foreground, INTERIOR, BACKGROUND).astype(np.uint8)
    classes[boundary] = BOUNDARY
    return edge, classes


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameter 2*sqrt(area/pi) in pixels of every cell of an instance label array."""
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    return 2.0 * np.sqrt(areas / np.pi)


def median_diameter(labels: np.ndarray) -> float | None:
    """Median equivalent diameter (px) of the cells of a label array; None when it has none.

    This is the object scale of an annotated image: training rescales each image so that it
    equals the model's canonical diameter (checkpoint metadata ``object_diameter``).
    """
    diameters = equivalent_diameters(labels)
    return float(np.median(diameters)) if diameters.size else None


def rescale_pair(
    image: np.ndarray, labels: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a 2D image (linear, anti-aliased when shrinking) and its labels (nearest) together.

    Both land on the same ``round(shape * factor)`` grid with the same pixel-centre mapping, so
    every label stays on its nucleus.
    """
    from skimage.transform import resize

    shape = tuple(max(1, round(n * factor)) for n in image.shape)
    if shape == image.shape:
        return np.asarray(image, np.float32), np.asarray(labels)
    out = resize(
        np.asarray(image, np.float32),
        shape,
        order=1,
        anti_aliasing=factor < 1,
        preserve_range=True,
    ).astype(np.float32)
    lab = resize(
        np.asarray(labels), shape, order=0, anti_aliasing=False, preserve_range=True
    ).astype(np.asarray(labels).dtype)
    return out, lab


def contact_mask(labels: np.ndarray, radius: int = 3) -> np.ndarray:
    """Pixels with two different cells within ``radius`` (square window): where cells touch.

    Covers the gap between neighbouring cells and each cell's rim facing a neighbour, the pixels
    whose mistakes merge two nuclei into one; training weighs them up (U-Net's border weights,
    Ronneberger et al. 2015, as a mask). Works plane by plane on the last two axes.
    """
    labels = np.asarray(labels)
    if labels.ndim > 2:
        return np.stack([contact_mask(plane, radius) for plane in labels])
    size = 2 * int(radius) + 1
    ids = labels.astype(np.int64)
    highest = ndi.maximum_filter(ids, size=size, mode="constant", cval=0)
    above_all = ids.max(initial=0) + 1  # background never counts as the lowest cell id
    lowest = ndi.minimum_filter(np.where(ids > 0, ids, above_all), size=size)
    return (highest > 0) & (lowest < highest)


def targets_from_labels(labels: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """Per-pixel classes (0 background, 1 interior, 2 boundary) from instance labels.

    The boundary is the ``boundary_width`` pixels inside each cell's edge, so touching cells are
    separated by boundary on both sides. A cell too small to keep an interior under that width
    keeps the interior it has under a 1-pixel boundary (or all its pixels), so no cell loses its
    seed. Works plane by plane on the last two axes.
    """
    labels = np.asarray(labels)
    if labels.ndim > 2:
        return np.stack([targets_from_labels(plane, boundary_width) for plane in labels])
    foreground = labels > 0
    edge, targets = edge_and_classes(labels, boundary_width)
    ids = np.unique(labels[foreground])
    with_interior = np.unique(labels[targets == INTERIOR])
    for cell in np.setdiff1d(ids, with_interior):
        pixels = labels == cell
        core = pixels & ~edge
        targets[core if core.any() else pixels] = INTERIOR
    return targets


# --- chunked (dask) versions, added by the io dev -----------------------------------------------
_EDGE_BIT = 4  # marks "edge" pixels (find_boundaries inner) in the encoded first pass


def targets_from_labels_dask(labels, boundary_width: int = 2):
    """:func:`targets_from_labels` for label images larger than memory, chunk by chunk (dask).

    Gives exactly the same classes as :func:`targets_from_labels` on the whole array: boundaries
    are found per block with a halo of ``boundary_width + 1`` pixels (image borders reflected,
    which cannot add boundary); the fallback for cells left without interior (decided per cell
    and plane over the whole plane) uses per-plane label sets gathered in one streamed pass, and
    is skipped when no cell needs it.

    Args:
        labels: integer instance labels (..., Y, X), numpy or dask.
        boundary_width: the boundary width in pixels.

    Returns:
        A lazy dask array of uint8 classes (0 background, 1 interior, 2 boundary).

    Example:
        >>> targets = targets_from_labels_dask(read_labels("a.ome.zarr")[:, 0])  # doctest: +SKIP
    """
    import dask
    import dask.array as da
    from dask.array.overlap import ensure_minimum_chunksize

    from grunet.parallel import default_scheduler, rechunk_method

    labels = da.asarray(labels)
    halo = boundary_width + 1
    depth = {axis: (halo if axis >= labels.ndim - 2 else 0) for axis in range(labels.ndim)}
    labels = labels.rechunk(  # every block at least as large as the halo
        {
            a: ensure_minimum_chunksize(halo, labels.chunks[a])
            for a in range(labels.ndim - 2, labels.ndim)
        },
        method=rechunk_method(),
    )
    encoded = labels.map_overlap(
        _encoded_targets, depth=depth, boundary="reflect", dtype=np.uint8, bw=boundary_width
    )
    lead_chunks = labels.chunks[:-2]
    per_block = [
        dask.delayed(_plane_label_sets)(lab, enc, offset)
        for lab, enc, offset in zip(
            labels.to_delayed().ravel(),
            encoded.to_delayed().ravel(),
            _block_plane_offsets(lead_chunks, labels.numblocks),
        )
    ]
    (sets,) = dask.compute(
        dask.delayed(_merge_plane_sets)(per_block), scheduler=default_scheduler()
    )
    fixes = {}
    for plane, (ids, with_interior, with_core) in sets.items():
        lacking = np.setdiff1d(ids, with_interior)
        if lacking.size:
            fixes[plane] = (lacking, np.intersect1d(lacking, with_core))
    if not fixes:
        return encoded & np.uint8(3)
    return da.map_blocks(
        _apply_fallback, labels, encoded, dtype=np.uint8, fixes=fixes, lead_chunks=lead_chunks
    )


def _encoded_targets(block: np.ndarray, bw: int) -> np.ndarray:
    """Classes | _EDGE_BIT on edge pixels, plane by plane, without the small-cell fallback."""
    if block.ndim > 2:
        return np.stack([_encoded_targets(plane, bw) for plane in block])
    edge, out = edge_and_classes(block, bw)
    out[edge] |= _EDGE_BIT
    return out


def _block_plane_offsets(lead_chunks, numblocks):
    starts = [np.cumsum((0,) + tuple(c)) for c in lead_chunks]
    for index in np.ndindex(*numblocks):
        yield tuple(int(s[i]) for s, i in zip(starts, index[: len(lead_chunks)]))


def _plane_label_sets(labels: np.ndarray, encoded: np.ndarray, offset: tuple) -> dict:
    """Per plane of a block: (ids, ids with interior, ids with non-edge pixels)."""
    lead = labels.shape[:-2]
    out = {}
    for index in np.ndindex(*lead):
        lab, enc = labels[index], encoded[index]
        plane = tuple(o + i for o, i in zip(offset, index))
        fg = lab > 0
        out[plane] = (
            np.unique(lab[fg]),
            np.unique(lab[(enc & 3) == INTERIOR]),
            np.unique(lab[fg & ((enc & _EDGE_BIT) == 0)]),
        )
    return out


def _merge_plane_sets(parts: list[dict]) -> dict:
    merged: dict = {}
    for part in parts:
        for plane, sets in part.items():
            if plane in merged:
                merged[plane] = tuple(np.union1d(a, b) for a, b in zip(merged[plane], sets))
            else:
                merged[plane] = sets
    return merged


def _apply_fallback(labels, encoded, fixes, lead_chunks, block_info=None):
    """Interior for cells with none in their plane: their non-edge pixels, else all pixels."""
    offset = tuple(start for start, _ in block_info[0]["array-location"][: len(lead_chunks)])
    out = encoded & np.uint8(3)
    for index in np.ndindex(*labels.shape[:-2]):
        plane = tuple(o + i for o, i in zip(offset, index))
        if plane not in fixes:
            continue
        lacking, with_core = fixes[plane]
        lab, enc, target = labels[index], encoded[index], out[index]
        cells = np.isin(lab, lacking)
        core_cells = np.isin(lab, with_core)
        not_edge = (enc & _EDGE_BIT) == 0
        target[cells & core_cells & not_edge] = INTERIOR
        target[cells & ~core_cells] = INTERIOR
    return out
