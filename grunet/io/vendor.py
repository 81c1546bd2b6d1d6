"""Microscope vendor files (CZI, ND2, LIF, DV, ...) through bioio and its reader plugins.

bioio is an optional dependency (``pip install "grunet[formats]"``); it is imported only when a
file that grunet's own readers do not handle arrives. Each scene (position, series) of a file is
read as its own lazy :class:`~grunet.io.stack.ImageStack`: the dask array reads the file chunk by
chunk as bioio's plugin defines them (one plane, or one Z-stack for CZI), never the whole file.

Anything bioio or a plugin raises, while opening or later while pixels are read, becomes one
:class:`~grunet.errors.InputError` naming the file (truncated/corrupt files often open and only
fail when their pixels are read).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from grunet.errors import InputError
from grunet.io.stack import (
    ImageStack,
    check_dtype,
    check_shape,
    default_channel_names,
    hex_colour,
)
from grunet.parallel import synchronous_scheduler

EXTRA = "formats"
INSTALL = f'pip install "grunet[{EXTRA}]"'
# The plugin that reads each vendor suffix (for the message when it is missing).
PLUGINS = {
    ".czi": "bioio-czi",
    ".nd2": "bioio-nd2",
    ".lif": "bioio-lif",
    ".dv": "bioio-dv",
    ".r3d": "bioio-dv",
}


def reader_options(path: str | Path, n_scenes: int) -> dict[str, Any]:
    """Keyword arguments for ``bioio.BioImage`` to read the pixels of a file with ``n_scenes``.

    - One YX plane per dask chunk (bioio-czi and bioio-lif default to a whole Z-stack per
      chunk), so that memory does not grow with the number of planes.
    - Multi-scene CZIs are read with bioio-czi's pylibCZIrw mode (one plane per chunk too): its
      default aicspylibczi mode (bioio-czi 3.0.1) returned the last scene's pixels for every
      scene of a test file whose scenes share one bounding box. The pylibCZIrw mode in turn
      cannot open CZIs without scene metadata, so single-scene files keep the default mode.
    """
    suffix = Path(str(path)).suffix.lower()
    if suffix == ".czi" and n_scenes > 1:
        return {"use_aicspylibczi": False}
    if suffix in (".czi", ".lif"):
        return {"chunk_dims": ["Y", "X"]}
    return {}


def plugin_for(path: str | Path) -> str | None:
    """The bioio plugin package that reads ``path`` (by its suffix), or None if not a known one."""
    return PLUGINS.get(Path(str(path)).suffix.lower())


def _missing(path: str | Path, why: str) -> InputError:
    plugin = plugin_for(path)
    what = f"{Path(str(path)).suffix} files need bioio and {plugin}" if plugin else why
    return InputError(path, f"{what}, from grunet's optional '{EXTRA}' extra: {INSTALL}")


@contextlib.contextmanager
def _quiet_bioio():
    """Keep bioio's per-plugin 'attempted ... failed' log lines off the user's terminal."""
    loggers = [logging.getLogger(name) for name in ("bioio", "bioio_base")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def open_bioimage(path: str | Path, options: dict[str, Any] | None = None) -> Any:
    """Open a file with ``bioio.BioImage``; every failure as one InputError naming the file."""
    try:
        import bioio
        from bioio_base.exceptions import UnsupportedFileFormatError
    except ImportError:
        raise _missing(path, "this file type needs bioio") from None
    try:
        with _quiet_bioio(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # bioio-czi's pylibCZIrw mode
            return bioio.BioImage(str(path), **(options or {}))
    except ImportError:  # a plugin registered but not importable (broken or partial install)
        raise _missing(path, "this file type needs a bioio plugin") from None
    except UnsupportedFileFormatError:
        plugin = plugin_for(path)
        if plugin is not None and not _installed(plugin):
            raise _missing(path, "") from None
        if plugin is not None:
            raise InputError(
                path, f"{plugin} cannot open it: not a valid file, or truncated/corrupt"
            ) from None
        raise InputError(
            path,
            "unsupported file type: no installed bioio reader opens it "
            f"(more readers come with {INSTALL})",
        ) from None
    except Exception as err:
        raise InputError(path, f"cannot read the file ({_describe(err)})") from None


def _installed(package: str) -> bool:
    from importlib import util

    try:
        return util.find_spec(package.replace("-", "_")) is not None
    except (ImportError, ValueError):
        return False


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def bioio_scenes(path: str | Path) -> list[str]:
    """Names of the scenes (positions, series) of a file read through bioio, in file order."""
    image = open_bioimage(path)
    return _scene_names(image, path)


def _scene_names(image: Any, path: str | Path) -> list[str]:
    try:
        return [str(s) for s in image.scenes]
    except Exception as err:
        raise InputError(
            path, f"cannot read the file, it may be truncated or corrupt ({_describe(err)})"
        ) from None


class _Guarded:
    """Array-like over one scene's dask array; reads turn plugin errors into InputErrors.

    Reads of one file take turns: some plugins share one file handle between their chunks and
    close it when a chunk is done (nd2's resource-backed arrays), which concurrent reads break.
    """

    def __init__(self, array: da.Array, path: str, image: Any):
        self.array, self.path = array, path
        self.image = image  # keeps the reader (and its open file) alive while data are read
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.lock = threading.Lock()

    def __getitem__(self, key) -> np.ndarray:
        try:  # synchronous: this already runs inside a worker of the caller's scheduler
            with self.lock:
                return np.asarray(self.array[key].compute(scheduler=synchronous_scheduler()))
        except Exception as err:
            raise InputError(
                self.path,
                f"cannot read pixel data, the file may be truncated or corrupt ({_describe(err)})",
            ) from None


def _positive(value: Any, axis: str, unit: str, path: str, warnings: list[str]) -> float | None:
    """A usable physical size, or None; a negative/zero/non-finite one is noted in ``warnings``."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number <= 0:
        warnings.append(
            f"{path}: the file's metadata gives {axis} pixel size {number:g} {unit}, "
            "which is not a positive size; stored as unknown"
        )
        return None
    return number


def read_bioio(path: str | Path, scene: int = 0) -> ImageStack:
    """Read one scene of a vendor file lazily as a 5D (T, C, Z, Y, X) ImageStack.

    Args:
        path: the file (any format a installed bioio plugin reads).
        scene: the scene index (0-based, in the order of ``bioio.BioImage(path).scenes``).

    Returns:
        The scene with pixel sizes (µm; t in s, None when unknown or unusable), channel names,
        ``scene`` set and ``warnings`` listing metadata that was dropped.

    Raises:
        InputError: bioio or the plugin is missing, the file is unreadable, the scene does not
            exist; the message names the file.
    """
    path = str(path)
    image = open_bioimage(path)
    names = _scene_names(image, path)
    if not 0 <= scene < len(names):
        raise InputError(path, f"has {len(names)} scene(s) {names}; there is no scene {scene}")
    pixels = open_bioimage(path, reader_options(path, len(names)))
    try:
        with _quiet_bioio():
            image.set_scene(scene)
            pixels.set_scene(scene)
            order = pixels.dims.order
            data = pixels.dask_data
            sizes = pixels.physical_pixel_sizes
            channels = [str(c) for c in (pixels.channel_names or [])]
            interval = _seconds(image.time_interval)  # CZI: only the default mode reports it
    except Exception as err:
        raise InputError(path, f"cannot read scene {names[scene]!r} ({_describe(err)})") from None
    data, channels = _samples_as_channels(data, order, channels, path)
    check_shape(tuple(data.shape), path)
    check_dtype(data.dtype, path)
    notes: list[str] = []
    pixel_sizes = {
        "t": _positive(interval, "t", "s", path, notes),
        "z": _positive(sizes.Z, "z", "µm", path, notes),
        "y": _positive(sizes.Y, "y", "µm", path, notes),
        "x": _positive(sizes.X, "x", "µm", path, notes),
    }
    if len(channels) != data.shape[1]:
        channels = default_channel_names(data.shape[1])
    colours = _channel_colours(pixels, path, scene) if order[-1] != "S" else []
    guarded = da.from_array(
        _Guarded(data, path, pixels),
        chunks=data.chunks,
        name=f"bioio-{_token(path, scene, data)}",
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * 5, dtype=data.dtype),
    )
    return ImageStack(
        data=guarded,
        pixel_sizes=pixel_sizes,
        channel_names=channels,
        channel_colours=colours,
        source=path,
        scene=names[scene] if len(names) > 1 else None,
        warnings=notes,
    )


def _token(path: str, scene: int, data: da.Array) -> str:
    """Names the dask array by the file's identity (path, size, mtime), the scene and the chunks."""
    stat = os.stat(path)
    return tokenize(path, stat.st_size, stat.st_mtime_ns, scene, data.chunks, str(data.dtype))


def _seconds(interval: Any) -> float | None:
    if interval is None:
        return None
    seconds = getattr(interval, "total_seconds", None)
    return float(seconds()) if seconds else float(interval)


def _channel_colours(image, path: str, scene: int) -> list[str | None]:
    """Display colours of the scene's channels from the file's OME metadata (as bioio's plugin
    translates it), or [] where the plugin offers none: colours are never worth a failed read.

    The translation of a large file's metadata can take seconds, and a convert opens each scene
    twice (checked, then written): it is done once per file (path, size, time) and kept.
    """
    try:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    found = _COLOURS.get(key) if key else None
    if found is None:
        found = _ome_colours(image)
        if key:
            _COLOURS.clear()  # one file at a time: a plate converts scene after scene
            _COLOURS[key] = found
    return found[scene] if scene < len(found) else []


def _ome_colours(image) -> list[list[str | None]]:
    """Per image (scene) of the file, its channels' colours from bioio's OME metadata."""
    try:
        with _quiet_bioio():
            images = image.ome_metadata.images
        return [
            [hex_colour(c.color.as_hex()) if c.color else None for c in i.pixels.channels]
            for i in images
        ]
    except Exception:
        return []


_COLOURS: dict[tuple, list[list[str | None]]] = {}


def _samples_as_channels(
    data: da.Array, order: str, channels: list[str], path: str
) -> tuple[da.Array, list[str]]:
    """bioio's TCZYX(S) → TCZYX: RGB samples (S) become channels of a one-channel image."""
    if order == "TCZYX":
        return data, channels
    if order != "TCZYXS":
        raise InputError(path, f"unexpected bioio dimension order {order!r}")
    n_channels, n_samples = data.shape[1], data.shape[5]
    if n_samples == 1:
        return data[..., 0], channels
    if n_channels != 1:
        raise InputError(path, f"has both {n_channels} channels and {n_samples} samples (RGB)")
    data = da.moveaxis(data[:, 0], -1, 1)  # (T, S, Z, Y, X)
    if n_samples > 4:
        return data, default_channel_names(n_samples)
    base = channels[0] if channels else "ch"
    return data, [f"{base}_{s}" for s in "RGBA"[:n_samples]]
