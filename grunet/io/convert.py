"""Whole-input operations: validate an input completely, convert inputs to canonical stores."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grunet.atomic import check_output_free
from grunet.errors import InputError
from grunet.io.progress import progress_callbacks
from grunet.io.ranges import DEFAULT_PERCENTILES, channel_stats, ranges_from_stats
from grunet.io.readers import read_image
from grunet.io.stack import ImageStack
from grunet.io.store import _nonfinite_error, write_image

STORE_SUFFIX = ".ome.zarr"
_STRIP_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr", ".npy")


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

    def summary(self) -> str:
        sizes = ", ".join(f"{k}={v:g}" for k, v in self.pixel_sizes.items() if v is not None)
        text = f"{self.path}: ok, TCZYX {self.shape} {self.dtype}"
        text += f", pixel sizes {sizes}" if sizes else ", pixel sizes unknown"
        if self.constant_channels:
            text += f"; warning: constant channel(s) {', '.join(self.constant_channels)}"
        return text


def check_input(
    path: str | Path,
    *,
    axes: str | None = None,
    labels: str | Path | None = None,
    progress: bool = False,
) -> InputReport:
    """Validate one input completely: open it and read every pixel once (streamed).

    Finds what opening alone cannot: corrupt compressed data, NaN/inf values; and, with
    ``labels``, a label image of another shape, of a non-integer type or with negative values.

    Args:
        path: the image (any :func:`grunet.io.read_image` input).
        axes: axes override, as for :func:`grunet.io.read_image`.
        labels: an optional label image that must match the image (T, Z, Y, X).
        progress: show a tqdm bar on stderr.

    Returns:
        An :class:`InputReport` (shape, dtype, pixel sizes, normalisation ranges).

    Raises:
        InputError: naming the bad file and the problem.

    Example:
        >>> print(check_input("a.tif").summary())  # doctest: +SKIP
    """
    stack = read_image(path, axes=axes)
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
        low = int(label_stack.data.min().compute())
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
) -> list[Path]:
    """Convert images to canonical stores ``outdir/<name or input stem>.ome.zarr``.

    All inputs are opened and all outputs checked before anything is written, so a bad file
    or an existing output is reported before hours of conversion. Each store is written
    atomically (see :func:`grunet.io.write_image`).

    Args:
        inputs: image paths (any :func:`grunet.io.read_image` input, also ``demo:<name>``).
        outdir: the folder for the stores (created).
        name: the store name (only with one input).
        axes: axes of the inputs, overriding the files' own (e.g. ``"TYX"``).
        channel_names: one name per channel.
        pixel_size: {"z", "y", "x"} in micrometres, overriding the files' metadata.
        overwrite: replace existing stores.
        pyramid: extra resolution levels for viewers (None: automatic, 0: none).
        progress: show tqdm bars on stderr.

    Returns:
        The paths of the stores written, in input order.

    Example:
        >>> convert(["a.tif", "b.ome.tif"], "stores")  # doctest: +SKIP
        [PosixPath('stores/a.ome.zarr'), PosixPath('stores/b.ome.zarr')]
    """
    if not inputs:
        raise InputError(None, "no inputs given")
    if name is not None and len(inputs) != 1:
        raise InputError(None, f"--name needs exactly one input, got {len(inputs)}")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "output folder is a file")
    outputs = [outdir / f"{name or store_name(p)}{STORE_SUFFIX}" for p in inputs]
    seen: dict[Path, str] = {}
    for source, out in zip(inputs, outputs):
        if out in seen:
            raise InputError(
                source, f"has the same name as {seen[out]}; both would be written to {out}"
            )
        seen[out] = str(source)

    def prepared(source) -> ImageStack:
        stack = read_image(source, axes=axes)
        if channel_names is not None:
            if len(channel_names) != stack.shape[1]:
                raise InputError(
                    source,
                    f"{len(channel_names)} channel names given for {stack.shape[1]} channel(s)",
                )
            stack = dataclasses.replace(stack, channel_names=list(channel_names))
        if pixel_size:
            stack = dataclasses.replace(stack, pixel_sizes={**stack.pixel_sizes, **pixel_size})
        return stack

    for i, (source, out) in enumerate(zip(inputs, outputs)):  # check all before writing any
        prepared(source)  # not kept: thousands of inputs must not hold thousands of open files
        check_output_free(out, overwrite)
        release_files(i)
    options = {
        "axes": axes,
        "channel_names": None if channel_names is None else list(channel_names),
        "pixel_size": pixel_size,
        "pyramid": pyramid,
    }
    for i, (source, out) in enumerate(zip(inputs, outputs)):
        release_files(i)
        stack = prepared(source)
        write_image(
            out,
            stack,
            overwrite=overwrite,
            pyramid=pyramid,
            progress=progress,
            attrs={"convert": options},
        )
    return outputs
