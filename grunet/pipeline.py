"""``grunet run``: every stage for a list of image files, without a workflow engine."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from grunet.errors import InputError

CLASS_AREAS = "class_areas.csv"  # the experiment's table of a semantic model (not counts.csv)


def run_pipeline(
    inputs: Sequence[str | Path],
    outdir: str | Path,
    *,
    model: str | Path | None = None,
    device: str = "auto",
    axes: str | None = None,
    scene: int | str | None = None,
    channels: list[str | int] | None = None,
    tile: int | None = None,
    batch_size: int | None = None,
    diameter: float | None = None,
    diameter_um: float | None = None,
    augment: bool = False,
    mode: str = "auto",
    anisotropy: float | None = None,
    keep_probabilities: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert, predict, segment, measure and count each input; return ``outdir/counts.csv``.

    With a semantic model (:mod:`grunet.task`) each input gets a class map
    (``<stem>.ome.zarr/labels/classes``) and a class-area table (``outdir/classes/<stem>.parquet``
    and ``.csv``) instead of cells, and ``outdir/class_areas.csv`` (all of them) is returned
    instead of counts; diameter, mode and anisotropy do not apply (planes are predicted alone).

    Writes ``outdir/<stem>.ome.zarr`` (image + ``labels/cells``), ``outdir/cells/<stem>.parquet``
    and ``.csv``, and ``outdir/counts.csv`` (one row per sample and time point). Every scene k
    of a multi-scene file (multi-series TIFF, CZI/ND2/LIF scenes) is its own sample
    ``<stem>_s<k>``. Every input is checked before any work starts, so one bad file stops the
    run before hours are spent.

    Args:
        inputs: image files (TIFF, OME-TIFF, zarr, OME-Zarr, ``demo:<name>``; CZI, ND2, LIF
            and more with the ``formats`` extra).
        outdir: output folder (created).
        model: checkpoint path; None uses the small model shipped with grunet.
        device: "auto", "cpu", "cuda" or "mps".
        axes: axes of the inputs where their metadata does not say (e.g. "TYX").
        scene: only this scene (index or name) of each input; None: every scene.
        channels: channel names or indices the model reads (e.g. the nuclear stain of a
            multi-channel file); None: all (see :func:`grunet.predict.predict_store`).
        tile, batch_size: inference options (see ``grunet predict``).
        diameter, diameter_um: nucleus diameter in px or µm (default: estimated per image).
        augment: average the predictions of each image and its mirror images (test-time
            augmentation: 4 forward passes, up to 0.01 more F1@0.5 on the val split).
        mode: "auto" (Z-stacks in 3D, the rest per plane), "3d" or "2d" (every plane alone).
            3D predicts XY, XZ and YZ planes (:mod:`grunet.predict3d`) and labels cells in 3D.
        anisotropy: z step / xy pixel size of Z-stacks (default: from the metadata, else 1).
        keep_probabilities: keep ``outdir/<stem>.probs.zarr`` (deleted otherwise).
        overwrite: replace existing outputs.
        progress: show progress bars on stderr.

    Example:
        >>> run_pipeline(["a.tif"], "out")  # doctest: +SKIP
        PosixPath('out/counts.csv')
    """
    from grunet.atomic import check_output_free, remove_path
    from grunet.count import count_files
    from grunet.io import open_store
    from grunet.io.convert import convert
    from grunet.measure import measure_store
    from grunet.memory import collect_only_new_objects, release_memory
    from grunet.predict import Predictor, predict_store, select_channels, store_scale
    from grunet.segmentation import segment_store

    if not inputs:
        raise InputError(None, "no input images given")
    outdir = Path(outdir)
    counts = outdir / "counts.csv"
    check_output_free(counts, overwrite)
    predictor = Predictor.from_checkpoint(model, device=device, augment=augment)
    with collect_only_new_objects():  # modules and model: no collection walks them again
        if predictor.semantic:
            check_output_free(outdir / CLASS_AREAS, overwrite)
            refuse_object_scale(predictor, diameter, diameter_um)
        stores = convert(  # every input's channels checked before any is converted
            inputs,
            outdir,
            axes=axes,
            scene=scene,
            overwrite=overwrite,
            progress=progress,
            check=lambda stack, source: select_channels(
                channels, stack.channel_names, source, predictor
            ),
        )
        for store in stores:  # every input checked before hours of work
            if not predictor.semantic and (diameter is not None or diameter_um is not None):
                store_scale(predictor, open_store(store), store, [], diameter, diameter_um, False)
        if predictor.semantic:
            return _run_semantic(
                stores,
                outdir,
                predictor,
                channels=channels,
                tile=tile,
                batch_size=batch_size,
                keep_probabilities=keep_probabilities,
                overwrite=overwrite,
                progress=progress,
            )
        tables = []
        for store in stores:
            stem = store.name[: -len(".ome.zarr")]
            probs = outdir / f"{stem}.probs.zarr"
            three_d = use_3d(mode, open_store(store).shape[2])
            options = dict(
                model=predictor,
                channels=channels,
                batch_size=batch_size,
                diameter=diameter,
                diameter_um=diameter_um,
                overwrite=True,
                progress=progress,
            )
            if three_d:
                from grunet.predict3d import predict_store_3d

                predict_store_3d(store, probs, anisotropy=anisotropy, **options)
            else:
                predict_store(store, probs, tile=tile, **options)
            release_memory()  # each stage's freed buffers go back before the next one starts
            segment_store(probs, store, overwrite=overwrite, three_d=three_d, progress=progress)
            release_memory()
            if not keep_probabilities:
                remove_path(probs)
            table = outdir / "cells" / f"{stem}.parquet"
            tables.append(
                measure_store(store, table, sample=stem, overwrite=overwrite, progress=progress)
            )
            release_memory()
        return count_files(tables, counts, overwrite=overwrite)


def _run_semantic(
    stores, outdir: Path, predictor, *, keep_probabilities, overwrite, progress, **options
):
    """Class maps and class-area tables of converted stores; ``outdir/class_areas.csv``."""
    from grunet.class_area import combine_class_areas
    from grunet.semantic_predict import predict_semantic_store

    tables = []
    for store in stores:
        stem = store.name[: -len(".ome.zarr")]
        _, table = predict_semantic_store(
            store,
            outdir / f"{stem}.probs.zarr",
            outdir / "classes" / f"{stem}.parquet",
            model=predictor,
            sample=stem,
            keep_probabilities=keep_probabilities,
            overwrite=overwrite,
            progress=progress,
            **options,
        )
        tables.append(table)
    return combine_class_areas(tables, outdir / CLASS_AREAS, overwrite=overwrite)


def refuse_object_scale(predictor, diameter: float | None, diameter_um: float | None) -> None:
    """A nucleus diameter given to a semantic model is an error, not silently ignored."""
    if diameter is not None or diameter_um is not None:
        option = "--diameter" if diameter is not None else "--diameter-um"
        raise InputError(
            None,
            f"{option}: sets the nucleus scale of instance models; {predictor.path or 'the model'}"
            " is a semantic model, which predicts at its checkpoint's own input_scale",
        )


def use_3d(mode: str, n_z: int) -> bool:
    """Whether a stack of ``n_z`` planes is segmented in 3D under ``mode`` (auto, 3d, 2d)."""
    if mode not in ("auto", "3d", "2d"):
        raise InputError(None, f"mode: expected auto, 3d or 2d, got {mode!r}")
    return n_z > 1 and mode != "2d"
