"""The Python API of design §7: ``load_model`` and ``segment``.

``grunet.segment`` is the plain function below; the segmentation stage (probabilities →
instances, chunked, for stores) is the module :mod:`grunet.segmentation`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grunet.errors import InputError


def load_model(path: str | Path | None = None, *, device: str = "auto"):
    """A ready predictor for a checkpoint or a shipped model.

    Args:
        path: a checkpoint written by ``grunet train``, a shipped model's name ("nuclei" or
            "dsb2018": the nuclei instance model, "camvid": the 11-class street-scene semantic
            model), or None for the nuclei model.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "mps".

    Returns:
        A :class:`grunet.predict.Predictor`.

    Example:
        >>> model = grunet.load_model()  # doctest: +SKIP
        >>> street = grunet.load_model("camvid")  # doctest: +SKIP
    """
    from grunet.checkpoint import load_checkpoint
    from grunet.predict import Predictor

    return Predictor.from_checkpoint(load_checkpoint(path), device=device)


def segment(
    image,
    model=None,
    *,
    chunk_size: int | None = None,
    diameter: float | None = None,
) -> np.ndarray:
    """Instance labels (uint32, 0 = background) of one 2D ``(Y, X)`` or ``(C, Y, X)`` image.

    Args:
        image: numpy or dask array; intensities are normalised per channel by robust percentiles.
        model: a predictor from :func:`load_model`, a checkpoint path, or None (shipped model).
        chunk_size: segment in chunks of this many pixels per side (memory-bounded); the labels
            are identical to whole-image segmentation up to a renumbering.
        diameter: typical nucleus diameter in the image, px. The image is resized so that its
            nuclei have the model's diameter; None estimates it from the image
            (:func:`grunet.scale.estimate_diameter`). Labels are always on the image's grid.

    Returns:
        ``(Y, X)`` uint32 labels.

    Example:
        >>> labels = grunet.segment(tifffile.imread("nuclei.tif"), diameter=40)  # doctest: +SKIP
    """
    from grunet.predict import Predictor
    from grunet.preprocess import normalize_channels, percentile_range
    from grunet.scale import estimate_diameter, resolve_scale
    from grunet.segmentation import segment_plane

    predictor = model if isinstance(model, Predictor) else load_model(model)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) == 0:
        raise InputError(None, f"segment expects a (Y, X) or (C, Y, X) image, got {image.shape}")
    if array.shape[0] != predictor.in_channels:
        raise InputError(
            None,
            f"image has {array.shape[0]} channel(s) but the model expects "
            f"{predictor.in_channels}; pass a (C, Y, X) array with the model's channels",
        )
    ranges = [percentile_range(channel) for channel in array]
    normalised = normalize_channels(array, ranges)
    scale = resolve_scale(
        predictor.object_diameter,
        diameter=diameter,
        estimate=lambda: estimate_diameter(predictor, [normalised]).diameter,
        where="image",
    )
    probs = predictor.predict_plane(normalised, factor=scale.factor)
    options = predictor.segmentation_options_for(scale)
    return segment_plane(probs, chunk_size=chunk_size, **options)
