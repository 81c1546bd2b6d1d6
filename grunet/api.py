"""The Python API of design §7: ``load_model`` and ``segment``.

``grunet.segment`` is the plain function below; the segmentation stage (probabilities →
instances, chunked, for stores) is the module :mod:`grunet.segmentation`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grunet.errors import InputError


def load_model(path: str | Path | None = None, *, device: str = "auto", augment: bool = False):
    """A ready predictor for a checkpoint or a shipped model.

    Args:
        path: a checkpoint written by ``grunet train``, a shipped model's name ("nuclei" or
            "dsb2018": the nuclei instance model, "camvid": the 11-class street-scene semantic
            model), or None for the nuclei model.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "mps".
        augment: test-time augmentation, each prediction averaged with its mirror images'.

    Returns:
        A :class:`grunet.predict.Predictor`.

    Example:
        >>> model = grunet.load_model()  # doctest: +SKIP
        >>> street = grunet.load_model("camvid")  # doctest: +SKIP
    """
    from grunet.checkpoint import load_checkpoint
    from grunet.predict import Predictor

    return Predictor.from_checkpoint(load_checkpoint(path), device=device, augment=augment)


def segment(
    image,
    model=None,
    *,
    chunk_size: int | None = None,
    diameter: float | None = None,
    augment: bool | None = None,
) -> np.ndarray:
    """Instance labels (uint32, 0 = background) of one 2D ``(Y, X)`` or ``(C, Y, X)`` image;
    for a semantic model (e.g. ``"camvid"``) its class map instead.

    Args:
        image: numpy or dask array; intensities are normalised per channel by robust percentiles
            (a semantic model: by its training mean/std; RGB as ``(3, Y, X)``).
        model: a predictor from :func:`load_model`, a checkpoint path, or None (shipped model).
        chunk_size: segment in chunks of this many pixels per side (memory-bounded); the labels
            are identical to whole-image segmentation up to a renumbering.
        diameter: typical nucleus diameter in the image, px. The image is resized so that its
            nuclei have the model's diameter; None estimates it from the image
            (:func:`grunet.scale.estimate_diameter`). Labels are always on the image's grid.
        augment: average the predictions of the image and its mirror images (4 forward
            passes, see :attr:`grunet.predict.Predictor.mirrors`); None keeps the model's
            setting (off unless ``load_model(augment=True)``).

    Returns:
        ``(Y, X)`` uint32 labels; for a semantic model a ``(Y, X)`` class map (values 0..N-1,
        uint8 up to 255 classes), on the image's grid whatever the model's input scale.
        ``diameter`` does not apply to semantic models.

    Example:
        >>> labels = grunet.segment(tifffile.imread("nuclei.tif"), diameter=40)  # doctest: +SKIP
    """
    from grunet.predict import Predictor
    from grunet.preprocess import normalize_channels, percentile_range
    from grunet.scale import estimate_diameter, resolve_scale
    from grunet.segmentation import segment_plane

    predictor = model if isinstance(model, Predictor) else load_model(model)
    if augment is not None:
        predictor = predictor.with_augment(augment)
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
    if predictor.semantic:
        return _class_map(array, predictor, chunk_size)
    ranges = [percentile_range(channel) for channel in array]
    normalised = normalize_channels(array, ranges)
    scale = resolve_scale(
        predictor.object_diameter,
        diameter=diameter,
        estimate=lambda: estimate_diameter(predictor, [normalised]).diameter,
        where="image",
    )
    network = predictor.for_factor(scale.factor)  # a low-magnification one for tiny nuclei
    probs = network.predict_plane(normalised, factor=scale.factor)
    options = network.segmentation_options_for(scale)
    return segment_plane(probs, chunk_size=chunk_size, **options)


def _class_map(array: np.ndarray, predictor, chunk_size: int | None) -> np.ndarray:
    """Class map of a ``(C, Y, X)`` image with a semantic predictor (argmax per pixel; with
    ``chunk_size`` the argmax runs on row bands, which gives the same map)."""
    from grunet.class_map import argmax_classes
    from grunet.preprocess import normalize_channels, percentile_range
    from grunet.task import ignore_index, normalize_mean_std, uses_mean_std

    norm = predictor.metadata.get("normalization") or {}
    if uses_mean_std(norm):
        normalised = normalize_mean_std(array, norm)
    else:
        normalised = normalize_channels(array, [percentile_range(c) for c in array])
    probs = predictor.predict_plane(normalised, factor=predictor.input_scale)
    ignore = ignore_index(predictor.metadata)
    if not chunk_size:
        return argmax_classes(probs, ignore)
    step = int(chunk_size)
    return np.concatenate(
        [argmax_classes(probs[:, y : y + step], ignore) for y in range(0, probs.shape[1], step)]
    )
