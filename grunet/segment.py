"""Class probabilities → instance labels (seeds from the interior class, grown by watershed)."""

from __future__ import annotations

import numpy as np
from skimage.measure import label as connected_components
from skimage.segmentation import watershed


def instances_from_probabilities(
    probs: np.ndarray,
    *,
    seed_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    min_seed_size: int = 4,
) -> np.ndarray:
    """Instance labels (uint32) of one (3, Y, X) probability map: background/interior/boundary.

    Seeds are connected regions where P(interior) > ``seed_threshold``; they grow by watershed on
    -P(interior) into the foreground (1 - P(background) > ``foreground_threshold``).
    """
    probs = np.asarray(probs, dtype=np.float32)
    interior = probs[1]
    foreground = (1.0 - probs[0]) > foreground_threshold
    seeds = connected_components((interior > seed_threshold) & foreground, connectivity=1)
    if min_seed_size > 1:
        sizes = np.bincount(seeds.ravel())
        small = sizes < min_seed_size
        small[0] = False
        seeds[small[seeds]] = 0
    labels = watershed(-interior, markers=seeds, mask=foreground)
    return labels.astype(np.uint32)
