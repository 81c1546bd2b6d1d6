"""Semantic models end to end on a store: probabilities → class map → class-area table.

``grunet predict`` and ``grunet run`` call :func:`predict_semantic_store` when the checkpoint's
task is semantic (:mod:`grunet.task`). Prediction is the instance path's tiled, memory-bounded
predictor (:func:`grunet.predict.predict_store`) with the checkpoint's mean/std normalisation and
``input_scale``; the class map (:mod:`grunet.class_map`) goes into ``<store>/labels/classes`` and
the areas (:mod:`grunet.class_area`) into a Parquet + CSV table. Z-stacks are predicted plane
by plane (no 3D views: classes are a per-pixel property).
"""

from __future__ import annotations

from pathlib import Path

from grunet.errors import InputError


def instance_only(what: str, where) -> InputError:
    """The one-line refusal of instance-only stages (segment, measure) for semantic inputs."""
    return InputError(
        where,
        f"is a semantic (class map) {what}; `grunet segment` and `grunet measure` apply to "
        "instance models only (`grunet run` / `grunet predict` with a semantic model already "
        "wrote labels/classes and the class-area table)",
    )


def predict_semantic_store(
    image_store: str | Path,
    probs_path: str | Path,
    areas_path: str | Path,
    *,
    model,
    sample: str | None = None,
    metadata: dict | None = None,
    keep_probabilities: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    **predict_options,
) -> tuple[Path, Path]:
    """Class map and class-area table of a store, with a semantic model.

    Args:
        image_store: ``<sample>.ome.zarr`` (``grunet convert``).
        probs_path: ``<sample>.probs.zarr`` for the N-class probabilities (float16).
        areas_path: ``classes/<sample>.parquet`` (+ ``.csv`` beside it).
        model: a :class:`grunet.predict.Predictor` of a semantic checkpoint.
        sample, metadata: the table's ``sample`` column and constant columns.
        keep_probabilities: keep ``probs_path`` (else deleted once the class map is written).
        overwrite: replace existing outputs; progress: bars on stderr.
        predict_options: passed to :func:`grunet.predict.predict_store` (tile, halo, ...).

    Returns:
        (``<store>/labels/classes``, the Parquet table).

    Example:
        >>> predict_semantic_store("a.ome.zarr", "a.probs.zarr", "classes/a.parquet",
        ...                        model=Predictor.from_checkpoint("camvid"))  # doctest: +SKIP
    """
    from grunet.atomic import remove_path
    from grunet.class_area import class_area_store
    from grunet.class_map import write_class_map
    from grunet.predict import predict_store
    from grunet.task import ignore_index, semantic_classes

    if not model.semantic:
        raise InputError(model.path, "is an instance model; predict_semantic_store needs semantic")
    predict_store(
        image_store,
        probs_path,
        model=model,
        overwrite=overwrite or not keep_probabilities,
        progress=progress,
        **predict_options,
    )
    classes = semantic_classes(model.metadata, model.classes)
    labels = write_class_map(
        probs_path,
        image_store,
        classes,
        ignore_index=ignore_index(model.metadata),
        attrs={"source": str(image_store), **model.describe()},
        overwrite=overwrite,
        progress=progress,
    )
    if not keep_probabilities:
        remove_path(Path(probs_path))
    table = class_area_store(
        image_store, areas_path, sample=sample, metadata=metadata, overwrite=overwrite
    )
    return labels, table
