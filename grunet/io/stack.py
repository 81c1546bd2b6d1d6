"""The in-memory view of an image: a lazy 5D (T, C, Z, Y, X) dask array plus its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from grunet.errors import InputError

AXES = "TCZYX"
PIXEL_SIZE_KEYS = ("t", "z", "y", "x")  # t in seconds, z/y/x in micrometres


@dataclass
class ImageStack:
    """An image of any size, read lazily, always with axes T, C, Z, Y, X (size 1 where absent).

    Attributes:
        data: dask array (T, C, Z, Y, X) in the source dtype; nothing is loaded until computed.
        pixel_sizes: ``{"t": seconds|None, "z": um|None, "y": um|None, "x": um|None}``.
        channel_names: one name per channel.
        channel_colours: each channel's display colour as the file records it (``"RRGGBB"``),
            None where it records none; what viewers show is chosen in :mod:`grunet.io.store`.
        source: the path the image was read from.
        attrs: the ``"grunet"`` attributes when read from a canonical store (else ``{}``).
        scene: the scene (position, series) name of a multi-scene file, else None.
        warnings: metadata problems found while reading (e.g. a negative pixel size stored as
            unknown), one line each, naming the file.

    Example:
        >>> stack = ImageStack(da.zeros((1, 1, 1, 64, 64), dtype="uint8"))
        >>> stack.shape
        (1, 1, 1, 64, 64)
    """

    data: da.Array
    pixel_sizes: dict[str, float | None] = field(default_factory=dict)
    channel_names: list[str] = field(default_factory=list)
    channel_colours: list[str | None] = field(default_factory=list)
    source: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    scene: str | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.data, da.Array):
            self.data = da.asarray(self.data)
        if self.data.ndim != 5:
            raise InputError(
                self.source or None,
                f"ImageStack needs 5 axes (T, C, Z, Y, X), got shape {self.data.shape}",
            )
        self.pixel_sizes = {k: _opt_float(self.pixel_sizes.get(k)) for k in PIXEL_SIZE_KEYS}
        n_channels = self.data.shape[1]
        if not self.channel_names:
            self.channel_names = default_channel_names(n_channels)
        if len(self.channel_names) != n_channels:
            raise InputError(
                self.source or None,
                f"{len(self.channel_names)} channel names {self.channel_names} given "
                f"for {n_channels} channel(s)",
            )
        self.channel_names = [str(name) for name in self.channel_names]
        colours = [hex_colour(c) for c in self.channel_colours]
        self.channel_colours = colours if len(colours) == n_channels else [None] * n_channels

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def normalization_ranges(self) -> list[tuple[float, float]] | None:
        """Per-channel (low, high) stored by :func:`grunet.io.write_image`, if any."""
        ranges = self.attrs.get("normalization", {}).get("ranges")
        return None if ranges is None else [(float(lo), float(hi)) for lo, hi in ranges]


def default_channel_names(n: int) -> list[str]:
    return [f"ch{i}" for i in range(n)]


def hex_colour(value: Any) -> str | None:
    """``"RRGGBB"`` (upper case) of a colour written ``#rgb``, ``rgb``, ``#rrggbb`` or
    ``rrggbb``; None for anything else (a colour is display metadata: never worth an error)."""
    text = str(value or "").strip().lstrip("#")
    if len(text) == 3:
        text = "".join(2 * ch for ch in text)
    if len(text) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
        return None
    return text.upper()


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_axes(axes: str, ndim: int, path: str | None) -> str:
    """Validate a user/file axes string over T, C, Z, Y, X for an ``ndim``-D array."""
    axes = axes.upper()
    if len(axes) != ndim:
        raise InputError(
            path, f"axes {axes!r} has {len(axes)} letters but the data has {ndim} dimensions"
        )
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise InputError(
            path, f"unknown axis {''.join(unknown)!r} in axes {axes!r}; use letters of TCZYX"
        )
    if len(set(axes)) != len(axes):
        raise InputError(path, f"axes {axes!r} repeats an axis")
    if not {"Y", "X"} <= set(axes):
        raise InputError(path, f"axes {axes!r} must include Y and X")
    return axes


def to_tczyx(data: da.Array, axes: str, path: str | None = None) -> da.Array:
    """Reorder a dask array with the given axes to 5D (T, C, Z, Y, X), adding size-1 axes."""
    axes = parse_axes(axes, data.ndim, path)
    order = sorted(range(len(axes)), key=lambda i: AXES.index(axes[i]))
    data = data.transpose(order)
    present = "".join(axes[i] for i in order)
    index = tuple(slice(None) if a in present else None for a in AXES)
    return data[index]


SUPPORTED_KINDS = "uif"  # unsigned, signed integers and floats


def check_dtype(dtype: np.dtype, path: str | None) -> None:
    """Refuse dtypes a microscopy image cannot have (complex, bool, strings, objects)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in SUPPORTED_KINDS or dtype.itemsize > 8:
        raise InputError(
            path,
            f"unsupported pixel type {dtype}; expected unsigned/signed integers "
            "(e.g. uint8, uint16) or floats (float32)",
        )


def check_shape(shape: tuple[int, ...], path: str | None) -> None:
    """Refuse empty, 1-D or >5-D arrays."""
    if len(shape) < 2:
        raise InputError(path, f"expected 2 to 5 axes (TCZYX), got a {len(shape)}-D array {shape}")
    if len(shape) > 5:
        raise InputError(path, f"expected 2 to 5 axes (TCZYX), got {len(shape)} axes {shape}")
    if any(int(n) == 0 for n in shape):
        raise InputError(path, f"the image is empty (shape {shape})")
