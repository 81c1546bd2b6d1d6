"""Lazy readers: TIFF / OME-TIFF / ImageJ hyperstacks, zarr / OME-Zarr, .npy, ``demo:<name>``,
and (with the ``formats`` extra) microscope vendor files through bioio (:mod:`grunet.io.vendor`).

Scenes: a file may hold several images (the series of a multi-series TIFF / OME-TIFF, the scenes
or positions of a CZI, ND2, LIF); :func:`list_scenes` names them and ``read_image(path, scene=k)``
reads one. Every other input has one scene.

Every reader returns an :class:`ImageStack` whose dask array reads the file chunk by chunk, so
a file larger than memory streams: compressed or tiled TIFFs through tifffile's zarr interface
(one strip/tile decoded at a time), uncompressed contiguous TIFFs (e.g. ImageJ's) by reading
exactly the bytes of each region with ``os.pread``. Files are opened read-only. Anything a
library raises while opening or reading becomes one :class:`InputError` naming the file.

Axes: the file's own axes are used (OME-TIFF, ImageJ hyperstacks, OME-Zarr, zarr v3
``dimension_names``). Axes a file leaves ambiguous (tifffile's ``Q``/``I`` series axes of a plain
multi-page TIFF, a plain zarr/npy array) are assigned from the innermost outwards to Z, then C,
then T: a 3D plain stack is read as ZYX, 4D as CZYX, 5D as TCZYX. Pass ``axes="TYX"`` (etc.) to
say otherwise. RGB samples (``S``) become channels.

Pixel sizes are micrometres (t: seconds), from OME metadata, ImageJ metadata (spacing, unit,
frame interval), OME-Zarr scale transforms, or TIFF resolution tags in centimetres; otherwise
unknown (None). Inch-based resolution tags (usually a 72 dpi default) are ignored. A negative or
zero size in a file's metadata is stored as unknown and noted in ``ImageStack.warnings``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

import grunet.io.vendor as vendor
from grunet.errors import InputError
from grunet.io.stack import (
    ImageStack,
    check_dtype,
    check_shape,
    default_channel_names,
    parse_axes,
    to_tczyx,
)
from grunet.npyfile import open_npy

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf2", ".tf8", ".lsm", ".stk")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")  # photographs / RGB scenes: read whole
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
TARGET_YX = 1024
MAX_CHUNK_BYTES = 64 * 2**20
AMBIGUOUS_AXES = "QI"  # tifffile's generic series/sequence axes
RGB_NAMES = ("red", "green", "blue")  # channel names of RGB images (their display colours too)
SUPPORTED = (
    "TIFF (.tif/.tiff/.ome.tif), zarr / OME-Zarr directories, .npy, PNG / JPEG; "
    f"CZI, ND2, LIF, DV and more with the '{vendor.EXTRA}' extra ({vendor.INSTALL})"
)

_LENGTH_UNITS_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6, "pm": 1e-6, "angstrom": 1e-4, "å": 1e-4,
}  # fmt: skip
_TIME_UNITS_S = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3,
    "us": 1e-6, "µs": 1e-6, "microsecond": 1e-6, "min": 60.0, "minute": 60.0,
    "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}  # fmt: skip


def length_um(value: Any, unit: str | None = "um") -> float | None:
    """A physical length in micrometres, or None when unknown/unusable."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    factor = _LENGTH_UNITS_UM.get((unit or "um").strip().lower())
    if factor is None or not math.isfinite(value) or value <= 0:
        return None
    return value * factor


def time_s(value: Any, unit: str | None = "s") -> float | None:
    """A time interval in seconds, or None when unknown/unusable."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    factor = _TIME_UNITS_S.get((unit or "s").strip().lower())
    if factor is None or not math.isfinite(value) or value <= 0:
        return None
    return value * factor


class _GuardedArray:
    """Array-like whose reads turn any library error into an InputError naming the file."""

    def __init__(self, array: Any, path: str, keep: Any = None):
        self.array = array
        self.path = path
        self.keep = keep  # e.g. the open TiffFile the array reads from
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        try:
            return np.asarray(self.array[key])
        except InputError:
            raise
        except Exception as err:
            raise InputError(
                self.path,
                f"cannot read pixel data, the file may be truncated or corrupt "
                f"({type(err).__name__}: {err})",
            ) from None


def _chunks_for(shape, native, axes: str, itemsize: int) -> tuple[int, ...]:
    """Dask chunks: native chunks grown in Y/X to about TARGET_YX; one plane deep elsewhere."""
    native = [max(1, int(c)) for c in native]
    chunks = list(native)
    for i, a in enumerate(axes):
        if a in "YX":
            chunks[i] = min(shape[i], native[i] * max(1, TARGET_YX // native[i]))
        elif not (a == "C" and i == len(axes) - 1 and native[i] == shape[i]):
            chunks[i] = 1  # interleaved samples (RGB) stay together, everything else one deep
    if "Y" in axes:  # very wide strips: fewer rows per chunk
        y = axes.index("Y")
        while int(np.prod(chunks)) * itemsize > MAX_CHUNK_BYTES and chunks[y] > native[y]:
            chunks[y] = max(native[y], (chunks[y] // 2) // native[y] * native[y])
    return tuple(chunks)


def _lazy(
    array: Any, axes: str, path: str, native=None, keep: Any = None, scene: int = 0
) -> da.Array:
    guarded = _GuardedArray(array, path, keep)
    native = native or (1,) * (guarded.ndim - 2) + guarded.shape[-2:]
    chunks = _chunks_for(guarded.shape, native, axes, guarded.dtype.itemsize)
    identity = (path, type(array).__name__, str(getattr(array, "path", "")), guarded.shape, scene)
    try:
        stat = os.stat(path)
        token = tokenize(*identity, stat.st_mtime_ns, stat.st_size, str(guarded.dtype))
    except OSError:
        token = tokenize(*identity, str(guarded.dtype))
    return da.from_array(
        guarded,
        chunks=chunks,
        name=f"read-{token}-{tokenize(chunks)}",
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * guarded.ndim, dtype=guarded.dtype),
    )


def _assign_ambiguous(axes: str) -> str:
    """Replace ambiguous axes (Q, I) from the innermost outwards by Z, C, T (the unused ones)."""
    free = [a for a in "ZCT" if a not in axes]
    out = list(axes)
    for i in reversed(range(len(out))):
        if out[i] in AMBIGUOUS_AXES:
            if not free:
                raise ValueError(axes)
            out[i] = free.pop(0)
    return "".join(out)


def _file_axes(axes: str, path: str) -> str:
    """Map a reader's axes string (tifffile letters) to TCZYX letters."""
    axes = axes.upper()
    if "S" in axes:
        if "C" in axes:
            raise InputError(
                path, f"has both channels (C) and samples (S) axes ({axes}); pass axes= explicitly"
            )
        axes = axes.replace("S", "C")
    try:
        axes = _assign_ambiguous(axes)
    except ValueError:
        raise InputError(path, f"cannot tell the axes {axes!r} apart; pass axes=") from None
    unknown = sorted(set(axes) - set("TCZYX"))
    if unknown:
        raise InputError(
            path,
            f"axes {axes!r} include {''.join(unknown)!r}, which is not one of T, C, Z, Y, X; "
            "pass axes= (e.g. --axes TZYX)",
        )
    return axes


def _finish(
    data: da.Array,
    axes: str,
    path: str,
    pixel_sizes: dict | None = None,
    channel_names: list[str] | None = None,
    attrs: dict | None = None,
    scene: str | None = None,
    warnings: list[str] | None = None,
    colours: list[str | None] | None = None,
) -> ImageStack:
    data = to_tczyx(data, axes, path)
    n_channels = data.shape[1]
    if not channel_names or len(channel_names) != n_channels:
        channel_names = default_channel_names(n_channels)
    return ImageStack(
        data=data,
        pixel_sizes=pixel_sizes or {},
        channel_names=list(channel_names),
        channel_colours=list(colours or []),
        source=path,
        attrs=attrs or {},
        scene=scene,
        warnings=list(warnings or []),
    )


# --------------------------------------------------------------------------------------- TIFF
_CORRUPTION_SIGNS = (
    "invalid page offset",
    "corrupt",
    "failed to reshape",
    "truncat",
    "invalid ifd",
)


class _TiffLog(logging.Handler):
    """Collects tifffile's log warnings while a file is opened (instead of printing them)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def corruption(self) -> str | None:
        for message in self.messages:
            if any(sign in message.lower() for sign in _CORRUPTION_SIGNS):
                return message.split("> ", 1)[-1]
        return None


@contextlib.contextmanager
def _tifffile_log():
    logger = logging.getLogger("tifffile")
    handler = _TiffLog()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _check_tiff_complete(tif, series, path: str) -> None:
    """Refuse a TIFF whose pixel data run past the end of its file (truncated download/copy).

    Pages of multi-file OME-TIFFs are checked against their own file.
    """
    if series.dataoffset is not None:
        end = series.dataoffset + series.size * series.dtype.itemsize
        _check_end(path, end, tif.filehandle.size)
        return
    for page in series.pages:
        if page is None:
            raise InputError(path, "TIFF is missing pages; the file may be truncated")
        offsets, counts = page.dataoffsets, page.databytecounts
        if len(offsets):
            end = max(int(o) + int(c) for o, c in zip(offsets, counts))
            handle = page.parent.filehandle
            same = not handle.path or os.path.abspath(path) == os.path.abspath(handle.path)
            _check_end(path if same else handle.path, end, handle.size)


def _check_end(path: str, end: int, size: int) -> None:
    if end > size:
        raise InputError(
            path,
            f"truncated TIFF: pixel data should end at byte {end} but the file has {size} bytes",
        )


def _not_positive(value: Any, axis: str, unit: str, path: str, notes: list[str]) -> None:
    """Note a metadata size that is a number but not a positive one (it is stored as unknown)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return
    if not (math.isfinite(number) and number > 0):
        notes.append(
            f"{path}: the file's metadata gives {axis} pixel size {number:g} {unit}, "
            "which is not a positive size; stored as unknown"
        )


def _ome_metadata(
    xml: str, image: int = 0, path: str = "", notes: list[str] | None = None
) -> tuple[dict, list[str], list[str | None]]:
    """Pixel sizes, channel names and channel colours of OME-XML image number ``image``."""
    root = ET.fromstring(xml)
    images = [el for el in root if el.tag.endswith("}Image")]
    where = images[image] if image < len(images) else root
    pixels = next((el for el in where.iter() if el.tag.endswith("}Pixels")), None)
    if pixels is None:
        return {}, [], []
    a = pixels.attrib
    for axis, key, unit in (("x", "PhysicalSizeX", "µm"), ("y", "PhysicalSizeY", "µm"),
                            ("z", "PhysicalSizeZ", "µm"), ("t", "TimeIncrement", "s")):  # fmt: skip
        if notes is not None and key in a:
            _not_positive(a[key], axis, a.get(f"{key}Unit", unit), path, notes)
    sizes = {
        "x": length_um(a.get("PhysicalSizeX"), a.get("PhysicalSizeXUnit", "µm")),
        "y": length_um(a.get("PhysicalSizeY"), a.get("PhysicalSizeYUnit", "µm")),
        "z": length_um(a.get("PhysicalSizeZ"), a.get("PhysicalSizeZUnit", "µm")),
        "t": time_s(a.get("TimeIncrement"), a.get("TimeIncrementUnit", "s")),
    }
    channels = [e for e in pixels if e.tag.endswith("}Channel")]
    names = [el.attrib.get("Name", f"ch{i}") for i, el in enumerate(channels)]
    colours = [ome_colour(el.attrib.get("Color")) for el in channels]
    return sizes, names, colours


def ome_colour(value: str | int | None) -> str | None:
    """``"RRGGBB"`` of an OME ``Color`` (a signed 32-bit RGBA integer); None when absent."""
    try:
        rgba = int(value) & 0xFFFFFFFF  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f"{rgba >> 8:06X}"


def _lut_colours(luts: Any) -> list[str | None]:
    """Display colours of ImageJ channel lookup tables (Fiji composites): each LUT's top entry."""
    colours: list[str | None] = []
    for lut in luts or []:
        lut = np.asarray(lut)
        top = lut[:, -1] if lut.ndim == 2 and lut.shape[0] == 3 else None
        colours.append(None if top is None else "".join(f"{int(v) & 255:02X}" for v in top))
    return colours


def _resolution_um(page, unit: str | None = None) -> tuple[float | None, float | None]:
    """(y, x) pixel sizes in micrometres from resolution tags, given a length unit."""
    try:
        xres, yres = page.get_resolution()
    except Exception:
        return None, None
    if unit is None:
        ru = page.tags.get("ResolutionUnit")
        code = int(ru.value) if ru is not None else 2
        if code != 3:  # only centimetres are trusted (inch is usually a 72 dpi default)
            return None, None
        unit = "cm"
    y = length_um(1.0 / yres, unit) if yres else None
    x = length_um(1.0 / xres, unit) if xres else None
    return y, x


def _tiff_metadata(
    tif, series, index: int, notes: list[str]
) -> tuple[dict, list[str], list[str | None]]:
    """Pixel sizes, channel names and colours (OME-XML, else ImageJ or resolution tags)."""
    page = series.pages[0] if series.pages else tif.pages.first
    path = tif.filehandle.path
    if tif.is_ome and tif.ome_metadata:
        sizes, names, colours = _ome_metadata(tif.ome_metadata, index, path, notes)
        if sizes:
            return sizes, names, colours
    if tif.is_imagej and tif.imagej_metadata is not None:
        meta = tif.imagej_metadata
        unit = meta.get("unit")  # absent or "pixel": not calibrated
        unit = "um" if unit in ("micron", "\\u00B5m") else unit
        calibrated = unit not in (None, "", "pixel", "pixels")
        y, x = _resolution_um(page, unit) if calibrated else (None, None)
        if calibrated and "spacing" in meta:
            _not_positive(meta["spacing"], "z", unit, path, notes)
        z = length_um(meta.get("spacing"), unit) if calibrated else None
        t = time_s(meta.get("finterval"), meta.get("tunit", "s"))
        return {"x": x, "y": y, "z": z, "t": t}, [], _lut_colours(meta.get("LUTs"))
    y, x = _resolution_um(page)
    return {"x": x, "y": y, "z": None, "t": None}, [], []


def _open_tiff(path: str):
    """Open a TIFF (read-only) and index its series; corrupt files as one InputError."""
    import tifffile

    with _tifffile_log() as log:
        try:
            tif = tifffile.TiffFile(path)  # opened read-only ("rb")
        except Exception as err:
            problem = f"not a readable TIFF file ({type(err).__name__}: {err})"
            raise InputError(path, problem) from None
        try:
            _ = [len(s.pages) for s in tif.series]
        except Exception as err:
            tif.close()
            raise InputError(path, f"corrupt TIFF ({type(err).__name__}: {err})") from None
    if log.corruption():
        tif.close()
        raise InputError(path, f"corrupt or truncated TIFF ({log.corruption()})")
    if not tif.series:
        tif.close()
        raise InputError(path, "TIFF contains no image")
    return tif


def tiff_scenes(path: str) -> list[str]:
    """Names of the series of a TIFF (OME image names, else ``series<k>``), in file order."""
    tif = _open_tiff(path)
    try:
        return [s.name or f"series{k}" for k, s in enumerate(tif.series)]
    finally:
        tif.close()


def _rgb_samples(series) -> bool:
    """True where the series' samples are the three channels of an RGB image."""
    import tifffile

    axes = series.axes.upper()
    return (
        series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB
        and "S" in axes
        and series.shape[axes.index("S")] == 3
    )


def read_tiff(path: str, axes: str | None = None, scene: int = 0) -> ImageStack:
    """Lazily read series ``scene`` of a TIFF / OME-TIFF / ImageJ hyperstack (pyramid level 0)."""
    import zarr

    tif = _open_tiff(path)
    try:
        if not 0 <= scene < len(tif.series):
            raise InputError(path, f"has {len(tif.series)} series; there is no series {scene}")
        series = tif.series[scene]
        shape = tuple(int(n) for n in series.shape)
        check_shape(shape, path)
        check_dtype(series.dtype, path)
        _check_tiff_complete(tif, series, path)
        file_axes = parse_axes(axes, len(shape), path) if axes else _file_axes(series.axes, path)
        notes: list[str] = []
        pixel_sizes, names, colours = _tiff_metadata(tif, series, scene, notes)
        if not names and _rgb_samples(series):
            names = list(RGB_NAMES)
        scene_name = (series.name or f"series{scene}") if len(tif.series) > 1 else None
        contiguous = _contiguous_array(tif, series, path)
        if contiguous is not None:  # uncompressed: read exactly the requested region
            native = tuple(
                n if a == "C" and i == len(shape) - 1 else 1
                for i, (a, n) in enumerate(zip(file_axes, shape))
            )
            tif.close()  # each region read opens the file itself
            data = _lazy(contiguous, file_axes, path, native=native, scene=scene)
        else:  # compressed / tiled: tifffile's zarr store decodes one strip or tile at a time
            array = zarr.open(series.aszarr(level=0), mode="r")
            if tuple(array.shape) != shape:  # squeezed series
                array = _Reshaped(array, shape)
            native = getattr(array, "chunks", None)
            data = _lazy(array, file_axes, path, native=native, keep=tif, scene=scene)
    except InputError:
        tif.close()
        raise
    except Exception as err:
        tif.close()
        raise InputError(path, f"cannot read TIFF ({type(err).__name__}: {err})") from None
    return _finish(
        data, file_axes, path, pixel_sizes, names, scene=scene_name, warnings=notes,
        colours=colours,
    )  # fmt: skip


class _ContiguousArray:
    """Uncompressed contiguous TIFF pixel data, read region by region with ``os.pread``.

    Layout (C order): ``(*planes, Y, X, *samples)``. A read of rows y0:y1, columns x0:x1 fetches
    exactly those bytes (one read per row, or one per plane when whole rows are wanted), so
    memory stays at the size of the region (tifffile's zarr store would decode a whole
    single-strip page, e.g. 128 MB for 8k x 8k uint16; a memory map would fault in neighbours).
    """

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype, row_axis: int):
        self.path, self.offset, self.shape = path, int(offset), tuple(int(n) for n in shape)
        self.file_dtype = np.dtype(dtype)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.row_axis = row_axis
        inner = self.shape[row_axis + 2 :]
        self.pixel_bytes = int(np.prod(inner, dtype=np.int64)) * self.file_dtype.itemsize
        self.row_bytes = self.shape[row_axis + 1] * self.pixel_bytes

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        slices, squeeze = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, (int, np.integer)):
                k = int(k) % n
                slices.append(slice(k, k + 1, 1))
                squeeze.append(axis)
            else:
                slices.append(slice(*k.indices(n)))
        if any(sl.step != 1 for sl in slices):  # dask never asks for steps; keep it simple
            if any(sl.step < 0 for sl in slices):
                raise IndexError("negative steps are not supported")
            bounds = tuple(slice(sl.start, max(sl.start, sl.stop)) for sl in slices)
            out = self._read(list(bounds))[tuple(slice(None, None, sl.step) for sl in slices)]
            return out.squeeze(axis=tuple(squeeze)) if squeeze else out
        out = self._read(slices)
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out

    def _read(self, slices: list[slice]) -> np.ndarray:
        r = self.row_axis
        lead, rows, cols, inner = slices[:r], slices[r], slices[r + 1], slices[r + 2 :]
        lead_ranges = [range(sl.start, sl.stop) for sl in lead]
        n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
        inner_shape = self.shape[r + 2 :]
        out = np.empty(
            (*(len(x) for x in lead_ranges), n_rows, n_cols, *inner_shape), self.file_dtype
        )
        flat = out.reshape(-1, n_rows, n_cols * self.pixel_bytes // self.file_dtype.itemsize)
        plane_bytes = self.shape[r] * self.row_bytes
        whole_rows = n_cols == self.shape[r + 1]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, plane in enumerate(np.ndindex(*(len(x) for x in lead_ranges))):
                index = [rng[j] for rng, j in zip(lead_ranges, plane)]
                plane_no = int(np.ravel_multi_index(index, self.shape[:r])) if r else 0
                base = self.offset + plane_no * plane_bytes + rows.start * self.row_bytes
                if whole_rows:
                    _pread_into(fd, flat[i], base)
                else:
                    start = base + cols.start * self.pixel_bytes
                    for row in range(n_rows):
                        _pread_into(fd, flat[i, row], start + row * self.row_bytes)
        finally:
            os.close(fd)
        if inner:
            out = out[(Ellipsis, *inner)]
        return out.astype(self.dtype, copy=False)


def _pread_into(fd: int, array: np.ndarray, offset: int) -> None:
    view = memoryview(array).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset + done}")
        done += n


def _contiguous_array(tif, series, path: str) -> _ContiguousArray | None:
    """A region reader for uncompressed, contiguous, untiled series; None otherwise."""
    page = series.keyframe
    axes = series.axes.upper()
    if (
        series.dataoffset is None
        or page.compression != 1
        or page.is_tiled
        or page.fillorder != 1
        or page.bitspersample != series.dtype.itemsize * 8
        or not (axes.endswith("YX") or axes.endswith("YXS"))
        or len(axes) != len(series.shape)
        or not hasattr(os, "preadv")
    ):
        return None
    dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
    return _ContiguousArray(path, series.dataoffset, tuple(series.shape), dtype, axes.index("Y"))


class _Reshaped:
    """View of an array with size-1 axes dropped (tifffile series are squeezed)."""

    def __init__(self, array, shape):
        self.array = array
        self.shape = shape
        self.dtype = array.dtype
        self.keep = [i for i, n in enumerate(array.shape) if n != 1]
        if len(self.keep) != len(shape):
            raise ValueError(f"cannot map {array.shape} to {shape}")
        self.chunks = tuple(array.chunks[i] for i in self.keep)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        full: list = [0] * len(self.array.shape)
        for i, k in zip(self.keep, key):
            full[i] = k
        return np.asarray(self.array[tuple(full)])


# --------------------------------------------------------------------------------------- zarr
def is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS)


def ome_attrs(group: Any) -> dict[str, Any]:
    """The OME metadata of a group: attrs["ome"] (NGFF 0.5) or the attrs themselves (0.4)."""
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))


def read_ome_zarr(path: Path, group) -> ImageStack:
    """An OME-Zarr image group (NGFF 0.4 or 0.5) as an ImageStack (highest resolution)."""
    ome = ome_attrs(group)
    try:
        multiscale = ome["multiscales"][0]
        dataset = multiscale["datasets"][0]
        axes_meta = multiscale.get("axes") or list("tczyx"[-group[dataset["path"]].ndim :])
        names = [a["name"] if isinstance(a, dict) else str(a) for a in axes_meta]
        units = [a.get("unit") if isinstance(a, dict) else None for a in axes_meta]
        array = group[dataset["path"]]
        scale = next(
            (t["scale"] for t in dataset.get("coordinateTransformations", []) if "scale" in t),
            [1.0] * len(names),
        )
    except Exception as err:
        raise InputError(path, f"invalid OME-Zarr metadata ({type(err).__name__}: {err})") from None
    check_shape(tuple(array.shape), str(path))
    check_dtype(array.dtype, str(path))
    if any(len(n) != 1 for n in names):
        raise InputError(path, f"OME-Zarr axes {names} are not all one of t, c, z, y, x")
    axes = "".join(n.upper() for n in names)
    sizes: dict[str, float | None] = {}
    for name, unit, value in zip(names, units, scale):
        name = name.lower()
        if name == "t":
            sizes["t"] = time_s(value, unit) if unit else None
        elif name in "zyx":
            sizes[name] = length_um(value, unit) if unit else None
    attrs = dict(group.attrs.get("grunet", {}))
    omero = ome.get("omero", {}).get("channels", [])
    channels = [c.get("label", "") for c in omero]
    colours = [c.get("color") for c in omero]
    if attrs:
        sizes = {**sizes, **(attrs.get("pixel_sizes") or {})}
        channels = attrs.get("channel_names") or channels
        colours = attrs.get("channel_colours") or colours
    data = _lazy(array, _file_axes(axes, str(path)), str(path), native=array.chunks)
    return _finish(
        data, _file_axes(axes, str(path)), str(path), sizes, channels, attrs, colours=colours
    )


def read_zarr(path: Path, axes: str | None = None) -> ImageStack:
    """A zarr array, a group holding one array, or an OME-Zarr image."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise InputError(path, f"not a readable zarr store ({type(err).__name__}: {err})") from None
    if isinstance(node, zarr.Group):
        if "multiscales" in ome_attrs(node) and axes is None:
            return read_ome_zarr(path, node)
        arrays = list(node.array_keys())
        if "multiscales" in ome_attrs(node):
            arrays = [ome_attrs(node)["multiscales"][0]["datasets"][0]["path"]]
        if len(arrays) != 1:
            raise InputError(
                path,
                f"zarr group holds {len(arrays)} arrays {sorted(arrays)[:5]}; "
                "give the path of the array itself",
            )
        node = node[arrays[0]]
    shape = tuple(int(n) for n in node.shape)
    check_shape(shape, str(path))
    check_dtype(node.dtype, str(path))
    if axes:
        file_axes = parse_axes(axes, len(shape), str(path))
    else:
        dims = getattr(node.metadata, "dimension_names", None)
        if dims and all(d and d.upper() in "TCZYX" for d in dims):
            file_axes = _file_axes("".join(d.upper() for d in dims), str(path))
        else:
            file_axes = _file_axes("Q" * (len(shape) - 2) + "YX", str(path))
    data = _lazy(node, file_axes, str(path), native=node.chunks)
    return _finish(data, file_axes, str(path))


# --------------------------------------------------------------------------------------- npy
def read_npy(path: str, axes: str | None = None) -> ImageStack:
    try:
        array = open_npy(path, allow_pickle=False)
    except Exception as err:
        raise InputError(path, f"not a readable .npy file ({type(err).__name__}: {err})") from None
    shape = tuple(int(n) for n in array.shape)
    check_shape(shape, path)
    check_dtype(array.dtype, path)
    file_axes = (
        parse_axes(axes, len(shape), path)
        if axes
        else _file_axes("Q" * (len(shape) - 2) + "YX", path)
    )
    return _finish(_lazy(array, file_axes, path), file_axes, path)


def read_picture(path: str, axes: str | None = None) -> ImageStack:
    """A PNG / JPEG file: RGB (alpha dropped) as 3 channels, grey as 1 (read whole: such files
    are small). A grey image saved as RGB (red = green = blue at every pixel, as many exports
    and screenshots are) is one channel, as a grey file: it holds nothing more, and a
    one-channel nuclei model reads it as it is."""
    import imageio.v3 as iio

    try:
        array = np.asarray(iio.imread(path))
    except Exception as err:  # noqa: BLE001 - any decoder failure means a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            path, f"not a readable PNG/JPEG image (corrupt or truncated: {reason})"
        ) from None
    if array.ndim == 3 and array.shape[-1] in (2, 4):  # grey + alpha, RGB + alpha
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[-1] == 3 and not axes and _grey_as_rgb(array):
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    check_shape(tuple(array.shape), path)
    check_dtype(array.dtype, path)
    file_axes = parse_axes(axes, array.ndim, path) if axes else ("YXC" if array.ndim == 3 else "YX")
    names = list(RGB_NAMES) if file_axes == "YXC" and array.shape[-1] == 3 else None
    return _finish(
        _lazy(np.ascontiguousarray(array), file_axes, path), file_axes, path, channel_names=names
    )


def _grey_as_rgb(array: np.ndarray) -> bool:
    """True where every pixel of a (Y, X, 3) picture has red = green = blue."""
    return bool(np.array_equal(array[..., 0], array[..., 1]) and
                np.array_equal(array[..., 0], array[..., 2]))  # fmt: skip


# --------------------------------------------------------------------------------------- entry
def _source(path: str | Path, axes: str | None) -> tuple[str, str, str | None]:
    """(kind, path, axes) of an input: kind is zarr, npy, tiff, bioio or probe (try TIFF, bioio).

    ``demo:<name>`` is resolved to its file; a missing/unreadable/empty path is refused here.
    """
    path_str = str(path)
    if path_str.startswith("demo:"):
        from grunet.demo import resolve_demo

        demo_path, demo_axes = resolve_demo(path_str)
        return _source(demo_path, axes or demo_axes)
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or directory")
    if p.is_dir():
        if is_zarr(p):
            return "zarr", str(p), axes
        raise InputError(
            p, f"is a directory, not an image file or a zarr store (supported: {SUPPORTED})"
        )
    if not os.access(p, os.R_OK):
        raise InputError(p, "permission denied (cannot read the file)")
    if p.stat().st_size == 0:
        raise InputError(p, "empty file (0 bytes)")
    name = p.name.lower()
    if name.endswith(".npy"):
        return "npy", str(p), axes
    if name.endswith(PICTURE_SUFFIXES):
        return "picture", str(p), axes
    if name.endswith(TIFF_SUFFIXES):
        return "tiff", str(p), axes
    if vendor.plugin_for(p):
        return "bioio", str(p), axes
    return "probe", str(p), axes


def _probe(path: str) -> str:
    """tiff or bioio for a file of an unknown suffix; else one error naming what is supported."""
    try:
        _open_tiff(path).close()
        return "tiff"
    except InputError as err:
        tiff_problem = err.problem
    try:
        vendor.open_bioimage(path)
        return "bioio"
    except InputError:
        pass
    raise InputError(path, f"unsupported file type (supported: {SUPPORTED}); {tiff_problem}")


def list_scenes(path: str | Path) -> list[str]:
    """Names of the scenes of an input, in file order (one name for single-image inputs).

    Scenes are the series of a multi-series TIFF / OME-TIFF and the scenes / positions / series
    of vendor files read through bioio; zarr, OME-Zarr, .npy and demo inputs have one scene.

    Example:
        >>> list_scenes("plate.czi")  # doctest: +SKIP
        ['TR1', 'P1']
    """
    kind, source, _ = _source(path, None)
    if kind == "probe":
        kind = _probe(source)
    if kind == "tiff":
        return tiff_scenes(source)
    if kind == "bioio":
        return vendor.bioio_scenes(source)
    return [Path(source.rstrip("/")).name]


def scene_index(names: list[str], scene: int | str, path: str | Path) -> int:
    """The index of ``scene`` (an index, its text, or a scene name) among ``names``."""
    if isinstance(scene, str) and scene in names:
        return names.index(scene)
    try:
        index = int(scene)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(names):
        raise InputError(
            path,
            f"has no scene {scene!r}; its {len(names)} scene(s): "
            + ", ".join(f"{k} ({n})" for k, n in enumerate(names)),
        )
    return index


def read_image(path: str | Path, *, axes: str | None = None, scene: int | str = 0) -> ImageStack:
    """Read any supported image lazily as a 5D (T, C, Z, Y, X) :class:`ImageStack`.

    Supported: TIFF / multi-page TIFF / OME-TIFF / ImageJ hyperstacks (via tifffile's zarr
    interface, so huge files stream), zarr arrays and OME-Zarr images, ``.npy``,
    ``demo:<name>`` (see :mod:`grunet.demo`), and with the ``formats`` extra every format a
    bioio plugin reads (CZI, ND2, LIF, DV, ...). Nothing is loaded until the data are computed.

    Args:
        path: the input file or directory, or ``"demo:nuclei_timelapse"`` etc.
        axes: the input's axes as letters of TCZYX (e.g. ``"TYX"``), overriding what the file
            says or what is guessed (a plain 3D stack is read as ZYX). Vendor files read
            through bioio always use their own dimensions.
        scene: which scene of a multi-scene file (index or name, see :func:`list_scenes`).

    Returns:
        The image with its pixel sizes (um / s, None when unknown) and channel names.

    Raises:
        InputError: the path is missing, not an image, truncated/corrupt, of an unsupported
            shape or pixel type, the scene does not exist, or the file needs the ``formats``
            extra; the message names the file.

    Example:
        >>> stack = read_image("demo:nuclei_3d")  # doctest: +SKIP
        >>> stack.shape  # doctest: +SKIP
        (1, 1, 60, 256, 256)
    """
    stack = _read_image(path, axes, scene)
    if str(path).startswith("demo:"):  # the demo files carry no pixel sizes; their sources do
        from grunet.demo import demo_pixel_sizes

        known = {k: v for k, v in demo_pixel_sizes(str(path)).items() if v is not None}
        stack = dataclasses.replace(stack, pixel_sizes={**stack.pixel_sizes, **known})
    return stack


def _read_image(path: str | Path, axes: str | None, scene: int | str) -> ImageStack:
    kind, source, axes = _source(path, axes)
    if kind == "probe":
        kind = _probe(source)
    if kind in ("tiff", "bioio") and scene not in (0, "0"):
        index = scene_index(list_scenes(source), scene, source)
    else:
        index = scene_index([Path(source).name], scene, source)
    if kind == "tiff":
        return read_tiff(source, axes, index)
    if kind == "bioio":
        return vendor.read_bioio(source, index)
    if kind == "zarr":
        return read_zarr(Path(source), axes)
    if kind == "picture":
        return read_picture(source, axes)
    return read_npy(source, axes)
