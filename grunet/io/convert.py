"""Whole-input operations: validate an input completely, convert inputs to canonical stores."""

from __future__ import annotations

import dataclasses
import gc
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grunet.atomic import check_output_free, remove_path
from grunet.errors import InputError, MetadataWarning
from grunet.io.progress import progress_callbacks
from grunet.io.ranges import DEFAULT_PERCENTILES, channel_stats, ranges_from_stats
from grunet.io.readers import list_scenes, read_image, scene_index
from grunet.io.stack import ImageStack
from grunet.io.store import _nonfinite_error, write_image
from grunet.parallel import default_scheduler

STORE_SUFFIX = ".ome.zarr"
_STRIP_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr", ".npy")


@dataclass(frozen=True)
class Sample:
    """One sample of an input: the file, the scene index in it, and the sample's name."""

    source: str
    scene: int
    name: str
    scene_name: str | None = None  # the scene's name in a multi-scene file


def input_samples(
    path: str | Path, scene: int | str | None = None, name: str | None = None
) -> list[Sample]:
    """The samples of one input: one per scene (all, or only ``scene``), each with its name.

    A single-scene input is one sample named ``name`` or the file's stem; scene k of a
    multi-scene file (multi-series TIFF, CZI scenes, ND2 positions, LIF series) is named
    ``<stem>_s<k>`` (``<name>_s<k>`` with ``name``), or ``name`` when one scene is chosen by it.

    Example:
        >>> [s.name for s in input_samples("plate.czi")]  # doctest: +SKIP
        ['plate_s0', 'plate_s1']
    """
    names = list_scenes(path)
    stem = name or store_name(path)
    if len(names) == 1:
        scene_index(names, 0 if scene is None else scene, path)  # refuses a wrong scene
        return [Sample(str(path), 0, stem)]
    chosen = range(len(names)) if scene is None else [scene_index(names, scene, path)]
    return [
        Sample(str(path), k, name if name and scene is not None else f"{stem}_s{k}", names[k])
        for k in chosen
    ]


@dataclass
class InputReport:
    """What :func:`check_input` found in a valid input."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    pixel_sizes: dict[str, float | None]
    channel_names: list[str]
    ranges: list[tuple[float, float]]
    constant_channels: list[str]
    scene: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        sizes = ", ".join(f"{k}={v:g}" for k, v in self.pixel_sizes.items() if v is not None)
        where = f"{self.path} (scene {self.scene})" if self.scene else self.path
        text = f"{where}: ok, TCZYX {self.shape} {self.dtype}"
        text += f", pixel sizes {sizes}" if sizes else ", pixel sizes unknown"
        text += f", channels {', '.join(self.channel_names)}"
        if self.constant_channels:
            text += f"; warning: constant channel(s) {', '.join(self.constant_channels)}"
        for warning in self.warnings:
            text += f"; warning: {warning.removeprefix(self.path + ': ')}"
        return text


def check_input(
    path: str | Path,
    *,
    axes: str | None = None,
    labels: str | Path | None = None,
    progress: bool = False,
    scene: int | str = 0,
) -> InputReport:
    """Validate one input (one scene of it) completely: open it and read every pixel once.

    Finds what opening alone cannot: corrupt compressed data, NaN/inf values; and, with
    ``labels``, a label image of another shape, of a non-integer type or with negative values.

    Args:
        path: the image (any :func:`grunet.io.read_image` input).
        axes: axes override, as for :func:`grunet.io.read_image`.
        labels: an optional label image that must match the image (T, Z, Y, X).
        progress: show a tqdm bar on stderr.
        scene: the scene of a multi-scene file (index or name; see :func:`list_scenes`).

    Returns:
        An :class:`InputReport` (shape, dtype, pixel sizes, normalisation ranges, warnings).

    Raises:
        InputError: naming the bad file and the problem.

    Example:
        >>> print(check_input("a.tif").summary())  # doctest: +SKIP
    """
    stack = read_image(path, axes=axes, scene=scene)
    callbacks = progress_callbacks(progress, Path(str(path)).name)
    stats = channel_stats(stack.data, callbacks=callbacks)
    _nonfinite_error(stack.source, stats, stack.channel_names)
    ranges = ranges_from_stats(stack.data, stats, DEFAULT_PERCENTILES)
    if labels is not None:
        check_labels_match(stack, labels, axes=axes, progress=progress)
    constant = [stack.channel_names[c] for c, s in sorted(stats.items()) if s.n and s.min == s.max]
    return InputReport(
        path=str(path),
        shape=stack.shape,
        dtype=str(stack.dtype),
        pixel_sizes=stack.pixel_sizes,
        channel_names=stack.channel_names,
        ranges=ranges,
        constant_channels=constant,
        scene=stack.scene,
        warnings=list(stack.warnings),
    )


def check_labels_match(
    image: ImageStack, labels: str | Path, *, axes: str | None = None, progress: bool = False
) -> None:
    """Refuse a label image that does not fit ``image``: shape, integer type, no negatives."""
    label_stack = read_image(labels, axes=axes)
    t, _c, z, y, x = image.shape
    lt, lc, lz, ly, lx = label_stack.shape
    if lc != 1 or (lt, lz, ly, lx) != (t, z, y, x):
        raise InputError(
            labels,
            f"label image shape (T, C, Z, Y, X) {label_stack.shape} does not match the image "
            f"{image.source} {image.shape}",
        )
    if label_stack.dtype.kind not in "ui":
        raise InputError(labels, f"labels must be integers, got {label_stack.dtype}")
    if label_stack.dtype.kind == "i":
        low = int(label_stack.data.min().compute(scheduler=default_scheduler()))
        if low < 0:
            raise InputError(labels, f"labels contain negative values (min {low})")


def release_files(count: int, every: int = 64) -> None:
    """Collect dropped readers every ``every`` inputs.

    An open TIFF sits in a reference cycle, so its file stays open until the garbage collector
    runs; with thousands of inputs that could exhaust the open-file limit.
    """
    if count % every == every - 1:
        gc.collect()


def store_name(path: str | Path) -> str:
    """The sample name of an input: its file name without image suffixes (``demo:x`` → x)."""
    text = str(path)
    if text.startswith("demo:"):
        return text[len("demo:") :]
    name = Path(text.rstrip("/")).name
    for suffix in _STRIP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def parse_pixel_size(text: str | Sequence[float] | None) -> dict[str, float] | None:
    """``"Z,Y,X"`` or ``"Y,X"`` (micrometres) → {"z":…, "y":…, "x":…}."""
    if text is None:
        return None
    values = text.split(",") if isinstance(text, str) else list(text)
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise InputError(None, f"--pixel-size {text!r}: expected numbers Z,Y,X or Y,X") from None
    if len(numbers) not in (2, 3) or not all(np.isfinite(n) and n > 0 for n in numbers):
        raise InputError(None, f"--pixel-size {text!r}: expected 2 or 3 positive numbers Z,Y,X")
    return dict(zip("zyx"[-len(numbers) :], numbers))


def convert(
    inputs: Sequence[str | Path],
    outdir: str | Path,
    *,
    name: str | None = None,
    axes: str | None = None,
    channel_names: Sequence[str] | None = None,
    pixel_size: dict[str, float] | None = None,
    overwrite: bool = False,
    pyramid: int | None = None,
    progress: bool = False,
    scene: int | str | None = None,
    check: Callable[[ImageStack, str], None] | None = None,
) -> list[Path]:
    """Convert images to canonical stores ``outdir/<sample>.ome.zarr``, one per scene.

    All inputs are opened and all outputs checked before anything is written, so a bad file
    or an existing output is reported before hours of conversion. Each store is written
    atomically (see :func:`grunet.io.write_image`). Every scene of a multi-scene file becomes
    its own store ``<stem>_s<k>`` (see :func:`input_samples`); its name, the file's pixel sizes,
    channel names and time interval are recorded in the store. Metadata the reader had to drop
    (e.g. a negative pixel size) is reported as a :class:`~grunet.errors.MetadataWarning`.

    Args:
        inputs: image paths (any :func:`grunet.io.read_image` input, also ``demo:<name>``).
        outdir: the folder for the stores (created).
        name: the store name (only with one input; ``<name>_s<k>`` for several scenes).
        axes: axes of the inputs, overriding the files' own (e.g. ``"TYX"``).
        channel_names: one name per channel.
        pixel_size: {"z", "y", "x"} in micrometres, overriding the files' metadata.
        overwrite: replace existing stores.
        pyramid: extra resolution levels for viewers (None: automatic, 0: none).
        progress: show tqdm bars on stderr.
        scene: convert only this scene (index or name) of each input; None: every scene.
        check: called with every input image (lazy) and its source path before anything is
            written, to refuse an input that a later stage cannot use (e.g. its channels).

    Returns:
        The paths of the stores written, in input (then scene) order.

    Example:
        >>> convert(["a.tif", "plate.czi"], "stores")  # doctest: +SKIP
        [PosixPath('stores/a.ome.zarr'), PosixPath('stores/plate_s0.ome.zarr'), ...]
    """
    if not inputs:
        raise InputError(None, "no inputs given")
    if name is not None and len(inputs) != 1:
        raise InputError(None, f"--name needs exactly one input, got {len(inputs)}")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "output folder is a file")
    samples = [s for p in inputs for s in input_samples(p, scene, name)]
    outputs = [outdir / f"{s.name}{STORE_SUFFIX}" for s in samples]
    seen: dict[Path, str] = {}
    for sample, out in zip(samples, outputs):
        if out in seen:
            raise InputError(
                sample.source, f"has the same name as {seen[out]}; both would be written to {out}"
            )
        seen[out] = sample.source

    def prepared(sample: Sample) -> ImageStack:
        stack = read_image(sample.source, axes=axes, scene=sample.scene)
        if channel_names is not None:
            if len(channel_names) != stack.shape[1]:
                raise InputError(
                    sample.source,
                    f"{len(channel_names)} channel names given for {stack.shape[1]} channel(s)",
                )
            stack = dataclasses.replace(stack, channel_names=list(channel_names))
        if pixel_size:
            stack = dataclasses.replace(stack, pixel_sizes={**stack.pixel_sizes, **pixel_size})
        return stack

    for i, (sample, out) in enumerate(zip(samples, outputs)):  # check all before writing any
        stack = prepared(sample)  # not kept: thousands of inputs must not hold open files
        for warning in stack.warnings:
            warnings.warn(warning, MetadataWarning, stacklevel=2)
        check_output_free(out, overwrite)
        if check is not None:
            check(stack, sample.source)
        release_files(i)
    options = {
        "axes": axes,
        "channel_names": None if channel_names is None else list(channel_names),
        "pixel_size": pixel_size,
        "pyramid": pyramid,
    }
    written: dict[str, list[Path]] = {}
    for i, (sample, out) in enumerate(zip(samples, outputs)):
        release_files(i)
        stack = prepared(sample)
        extra = {"convert": options, "metadata_warnings": list(stack.warnings)}
        if sample.scene_name is not None:
            extra["scene"] = {"index": sample.scene, "name": sample.scene_name}
        try:
            write_image(
                out,
                stack,
                overwrite=overwrite,
                pyramid=pyramid,
                progress=progress,
                attrs=extra,
            )
        except InputError:
            # A file found corrupt while its pixels are read (truncated vendor files open
            # fine) leaves none of its scenes behind: they all come from the same bad file.
            for done in written.get(sample.source, []):
                remove_path(done)
            raise
        written.setdefault(sample.source, []).append(out)
    return outputs
