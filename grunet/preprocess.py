"""Intensity normalisation and training targets from instance labels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
DEFAULT_PERCENTILES = (1.0, 99.8)


def percentile_range(
    image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> tuple[float, float]:
    """Robust (low, high) intensities of an in-memory array (finite values only)."""
    values = np.asarray(image, dtype=np.float32)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, percentiles)
    return float(low), float(high)


def normalize(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] to [0, 1] linearly (values outside are kept, not clipped); float32.

    A constant image (high <= low) maps to zeros rather than dividing by zero.
    """
    image = np.asarray(image, dtype=np.float32)
    scale = high - low
    if not np.isfinite(scale) or scale <= 1e-12:
        return np.zeros_like(image)
    return (image - np.float32(low)) / np.float32(scale)


def normalize_channels(
    image: np.ndarray, ranges: list[tuple[float, float]] | None = None
) -> np.ndarray:
    """Normalise a (C, ...) array channel by channel; ranges default to each channel's own."""
    image = np.asarray(image)
    if ranges is None:
        ranges = [percentile_range(channel) for channel in image]
    return np.stack([normalize(ch, lo, hi) for ch, (lo, hi) in zip(image, ranges)])


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
    edge = find_boundaries(labels, connectivity=1, mode="inner") & foreground
    boundary = edge
    if boundary_width > 1:
        boundary = ndi.binary_dilation(edge, iterations=boundary_width - 1) & foreground
    targets = np.where(foreground, INTERIOR, BACKGROUND).astype(np.uint8)
    targets[boundary] = BOUNDARY
    ids = np.unique(labels[foreground])
    with_interior = np.unique(labels[targets == INTERIOR])
    for cell in np.setdiff1d(ids, with_interior):
        pixels = labels == cell
        core = pixels & ~edge
        targets[core if core.any() else pixels] = INTERIOR
    return targets
