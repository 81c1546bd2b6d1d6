"""Tiled inference: class probabilities of whole planes or whole OME-Zarr stores, memory-flat.

How a plane is cut (design §4):

- The output is produced **block by block**; in a store a block is one output chunk (or a few,
  when ``tile`` is larger than the chunk), so blocks are independent tasks (also on a
  dask-distributed cluster), written whole and chunk-aligned, and memory does not depend on the
  image size. :meth:`Predictor.predict_plane` treats the whole in-memory plane as one block.
- Each block is covered by **windows**: cores of ``tile`` pixels that tile the block, each read
  with ``halo`` pixels of context on every side (clipped at the image border, where whole-image
  inference has no context either). The network sees a window, never a bare block edge.
- Overlapping windows are **blended** with a cosine (sin²) taper that falls to 0 over ``halo``
  pixels towards every window edge that lies inside the image (never at the image border), and
  normalised by the summed weights, so no seam shows where windows meet. A pixel's prediction is
  thus dominated by windows that saw at least ``halo`` pixels around it. Across a block border
  the blocks do not share windows: each side comes from its own windows, which read ``halo``
  pixels beyond the border (the same context a blended seam gets); with the default tile = chunk
  = 1024 every window is one block.
- ``tile`` and ``halo`` are rounded up to multiples of 32 = 2^S (the network's pooling stride), so
  window origins fall on the pooling grid of whole-image inference.

Why ``halo`` = 32 by default: no halo makes tiles exact, since the network's theoretical receptive
field (3×3 convs at 1/32 scale; a GRU refining full-resolution h at every scale) is wider than any
practical window, but the effective receptive field is small. Measured with the shipped model on
real 511² nuclei frames 5 and 20 (larger, more textured nuclei than it was trained on), tile 256:
halo 32 → argmax agreement with whole-image inference 99.88-99.93%, max |Δp| ≈ 0.19-0.21;
halo 64 → 99.94-99.95%, max |Δp| ≈ 0.11-0.14. Disagreements sit on seam pixels only, so the
default tile 1024 has 4× fewer of them than tile 256. Larger halos cost (1 + 2·halo/tile)² in
compute; tile 1024 + halo 32 reads 1.13× the pixels at most, halo 64 1.27×.
"""

from __future__ import annotations

import copy
import math
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from grunet import __version__
from grunet.errors import CheckpointError, ConfigError, InputError
from grunet.runtime import (
    LEFT_RIGHT_MIRRORS,
    MIRRORS,
    NO_MIRRORS,
    PreparedModel,
    prepare_model,
    select_device,
    should_compile,
)
from grunet.scale import (
    FALLBACK_OBJECT_DIAMETER,
    ObjectScale,
    resample,
    scaled_lengths,
    scaled_shape,
    support,
)

DEFAULT_TILE = 1024  # window core (pixels per side); one window per 1024² image chunk
DEFAULT_HALO = 32  # context read on every side of a core; (1+2·32/1024)² = 1.13× the pixels
ALIGN = 32  # tile/halo are rounded up to this (the network's total pooling stride)
# Semantic models (street scenes: whether a pixel is road or pavement depends on context far
# away) need a wider halo than nuclei. On a 2048² CamVid mosaic at input scale 0.5, tile 512,
# the shipped CamVid model agrees with whole-image prediction on 99.843 % of pixels with halo
# 128, 99.891 % with 192 and 99.952 % with 256 (4096² mosaic, tile 1024: 99.913 % / 99.965 %
# with 128 / 256; benchmarks/semantic_tiling.py). A checkpoint's "halo" wins.
SEMANTIC_HALO = 256
PROBS_NAME = "probs"
NOT_APPLICABLE = "not applicable (semantic model)"  # object scale of semantic models


def _round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


def taper(start: int, stop: int, size: int, ramp: int) -> np.ndarray:
    """1D blending weights of a window [start, stop) on an axis of ``size`` pixels.

    sin² ramps from ~0 to 1 over ``ramp`` pixels at each window edge that lies inside the image;
    edges on the image border are not tapered (no other window covers those pixels).
    """
    weights = np.ones(stop - start, dtype=np.float32)
    if ramp <= 0:
        return weights
    distance = np.arange(stop - start, dtype=np.float32)
    ramp_up = np.sin(0.5 * np.pi * np.minimum(1.0, (distance + 0.5) / ramp)) ** 2
    if start > 0:
        weights *= ramp_up
    if stop < size:
        weights *= ramp_up[::-1]
    return weights.astype(np.float32)


def axis_windows(lo: int, hi: int, size: int, tile: int, halo: int) -> list[tuple[int, int]]:
    """Windows [start, stop) whose cores of ``tile`` pixels cover [lo, hi) of an axis.

    Each window reaches ``halo`` pixels beyond its core on both sides, clipped to [0, size).
    A window is dropped when its predecessor already reaches ``halo`` past its core (or the image
    end), so small images get a single window: whole-image inference.
    """
    windows: list[tuple[int, int]] = []
    for core in range(lo, hi, tile):
        core_stop = min(core + tile, hi)
        if windows and windows[-1][1] >= min(size, core_stop + halo):
            continue  # the previous window reaches the image end: it covers this core already
        windows.append((max(0, core - halo), min(size, core_stop + halo)))
    return windows


@dataclass
class Block:
    """One output block of one plane: the accumulators of its windows' blended predictions."""

    plane: tuple[int, ...]  # index of the (t, z) plane (empty for a single in-memory plane)
    y0: int
    y1: int
    x0: int
    x1: int
    windows: list[tuple[int, int, int, int]]  # (wy0, wy1, wx0, wx1) in plane coordinates
    region: tuple[int, int, int, int] = (0, 0, 0, 0)  # input read: union of the windows
    image: np.ndarray | None = None  # (C, ry, rx) normalised float32 input of the region
    acc: np.ndarray | None = None  # (classes, by, bx) weighted probability sums
    wsum: np.ndarray | None = None  # (by, bx) weight sums
    remaining: int = 0
    out_box: tuple[int, int, int, int] | None = None  # original-grid box of a rescaled block

    def __post_init__(self) -> None:
        self.region = (
            min(w[0] for w in self.windows),
            max(w[1] for w in self.windows),
            min(w[2] for w in self.windows),
            max(w[3] for w in self.windows),
        )
        self.remaining = len(self.windows)

    def window_input(self, window: tuple[int, int, int, int]) -> np.ndarray:
        ry0, _, rx0, _ = self.region
        wy0, wy1, wx0, wx1 = window
        return self.image[:, wy0 - ry0 : wy1 - ry0, wx0 - rx0 : wx1 - rx0]

    def add(self, window, probs: np.ndarray, shape: tuple[int, int], ramp: int) -> None:
        """Blend one window's (classes, wy, wx) probabilities into the block."""
        wy0, wy1, wx0, wx1 = window
        if len(self.windows) == 1:  # the common case (tile = chunk): weights are 1 in the block
            self.acc = probs[:, self.y0 - wy0 : self.y1 - wy0, self.x0 - wx0 : self.x1 - wx0]
            self.remaining -= 1
            return
        if self.acc is None:
            by, bx = self.y1 - self.y0, self.x1 - self.x0
            self.acc = np.zeros((probs.shape[0], by, bx), dtype=np.float32)
            self.wsum = np.zeros((by, bx), dtype=np.float32)
        oy0, oy1 = max(wy0, self.y0), min(wy1, self.y1)
        ox0, ox1 = max(wx0, self.x0), min(wx1, self.x1)
        if oy0 < oy1 and ox0 < ox1:
            wy = taper(wy0, wy1, shape[0], ramp)[oy0 - wy0 : oy1 - wy0]
            wx = taper(wx0, wx1, shape[1], ramp)[ox0 - wx0 : ox1 - wx0]
            weight = wy[:, None] * wx[None, :]
            target = (slice(oy0 - self.y0, oy1 - self.y0), slice(ox0 - self.x0, ox1 - self.x0))
            self.acc[(slice(None), *target)] += (
                probs[:, oy0 - wy0 : oy1 - wy0, ox0 - wx0 : ox1 - wx0] * weight
            )
            self.wsum[target] += weight
        self.remaining -= 1

    def result(self) -> np.ndarray:
        """(classes, by, bx) float32 blended probabilities; frees the accumulators."""
        out = self.acc if self.wsum is None else self.acc / self.wsum
        self.acc = self.wsum = self.image = None
        return out


def plan_blocks(
    shape: tuple[int, int], block: tuple[int, int], tile: int, halo: int, plane=()
) -> list[Block]:
    """Blocks of ``block`` pixels (the last ones shorter) covering a plane, with their windows."""
    ny, nx = shape
    blocks = []
    for y0 in range(0, ny, block[0]):
        y1 = min(y0 + block[0], ny)
        wys = axis_windows(y0, y1, ny, tile, halo)
        for x0 in range(0, nx, block[1]):
            x1 = min(x0 + block[1], nx)
            wxs = axis_windows(x0, x1, nx, tile, halo)
            windows = [(a, b, c, d) for a, b in wys for c, d in wxs]
            blocks.append(Block(plane, y0, y1, x0, x1, windows))
    return blocks


def largest_window(layout: list[Block]) -> tuple[int, int]:
    """(y, x): the largest window extent per axis over a plane's blocks.

    A compiled model runs every window at this one shape (padded), so that it compiles once.
    When shrinking, a block's window may be longer than a tile with its halos along one axis
    and shorter along the other (:func:`scaled_block_size`); a tile-sized square there padded
    a 2048² plane's 640-664 × 1208 windows at ×0.59 to 1088 × 1216, 1.62× the pixels.
    """
    windows = [w for block in layout for w in block.windows]
    return max(w[1] - w[0] for w in windows), max(w[3] - w[2] for w in windows)


def plan_scaled_blocks(
    shape: tuple[int, int],
    block: tuple[int, int],
    tile: int,
    halo: int,
    factor: float,
    plane=(),
) -> list[Block]:
    """Blocks of ``block`` original pixels, predicted on the plane resized by ``factor``.

    At factor 1 these are the blocks of :func:`plan_blocks`; otherwise see :func:`scaled_block`.
    """
    if factor == 1.0:
        return plan_blocks(shape, block, tile, halo, plane)
    return [
        scaled_block(
            (y0, min(y0 + block[0], shape[0]), x0, min(x0 + block[1], shape[1])),
            shape,
            tile,
            halo,
            factor,
            plane,
        )
        for y0 in range(0, shape[0], block[0])
        for x0 in range(0, shape[1], block[1])
    ]


def scaled_block(box, shape, tile: int, halo: int, factor: float, plane=()) -> Block:
    """The block for original ``box`` of a plane predicted at ``factor``.

    Its windows lie on the resized grid and cover the resized pixels that ``box`` is resampled
    from (:func:`resized_span`); ``out_box`` is ``box``. A block whose resized pixels fit one
    window of at most ``(tile + 2·halo)²`` pixels (the largest window at factor 1) gets one
    window of any aspect, so no halo is paid inside it; a larger one is cut into equal cores of
    at most ``tile`` per side. Factor 1: the plain block.
    """
    y0, y1, x0, x1 = box
    if factor == 1.0:
        windows = [
            (a, b, c, d)
            for a, b in axis_windows(y0, y1, shape[0], tile, halo)
            for c, d in axis_windows(x0, x1, shape[1], tile, halo)
        ]
        return Block(plane, y0, y1, x0, x1, windows)
    (sy0, sy1, _), one_y, split_y = _axis_choices(y0, y1, shape[0], factor, tile, halo)
    (sx0, sx1, _), one_x, split_x = _axis_choices(x0, x1, shape[1], factor, tile, halo)
    if _length(one_y) * _length(one_x) <= (tile + 2 * halo) ** 2:
        ys, xs = one_y, one_x
    else:
        ys, xs = split_y, split_x
    windows = [(a, b, c, d) for a, b in ys for c, d in xs]
    return Block(plane, sy0, sy1, sx0, sx1, windows, out_box=tuple(box))


def resized_span(lo: int, hi: int, n: int, factor: float) -> tuple[int, int, int]:
    """``(s0, s1, m)``: the span of an axis resized from ``n`` to ``m`` px that original
    ``[lo, hi)`` is resampled from (:func:`grunet.scale.support`), widened to the pooling grid
    so windows start where whole-plane windows would (max pooling is not shift-equivariant: a
    window shifted by a few px gives different probabilities)."""
    (m,) = scaled_shape((n,), factor)
    s0, s1 = support((m, 1), (n, 1), (lo, hi, 0, 1))[:2]
    return s0 // ALIGN * ALIGN, min(m, _round_up(s1, ALIGN)), m


def _axis_choices(lo: int, hi: int, n: int, factor: float, tile: int, halo: int):
    """The resized span of original ``[lo, hi)`` of an axis (:func:`resized_span`) and the two
    ways to cover it: one window, or windows of equal cores of at most ``tile``."""
    s0, s1, m = resized_span(lo, hi, n, factor)
    one = axis_windows(s0, s1, m, s1 - s0, halo)
    split = axis_windows(s0, s1, m, balanced_tile(s1 - s0, tile), halo)
    return (s0, s1, m), one, split


def _length(windows: list[tuple[int, int]]) -> int:
    """Summed length of an axis's windows."""
    return sum(b - a for a, b in windows)


def balanced_tile(length: int, tile: int) -> int:
    """A core of at most ``tile`` px that splits ``length`` into equal cores (pooling grid).

    A resized block is rarely a multiple of the tile; cores of ``tile`` plus one remainder give
    windows of a new shape in nearly every block, and glibc's heap fragments on those ever
    different allocations (measured: peak RSS of a 4096² plane at ×1.82 1.77 GiB, 1.20 with
    equal cores; the 2048² plane 1.46 vs 1.32). Equal cores keep the shapes few and alike.
    """
    parts = max(1, -(-length // tile))
    return min(tile, _round_up(-(-length // parts), ALIGN))


def scaled_block_size(
    chunks: tuple[int, int],
    tile: int,
    factor: float,
    halo: int = 0,
    shape: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Original pixels per block: whole chunks per axis.

    Default (and at ``factor`` >= 1): whole chunks whose resized size is about one tile.
    Shrinking a plane of ``shape``, the layout whose windows (as :func:`scaled_block` cuts them)
    compute the fewest pixels, counted exactly per axis: that default, or blocks of any number
    of chunks per axis that each fit one window, which pay a halo only at their borders. At
    ×0.59 with 1024² chunks, 1 × 2 chunks per block compute 1.08× the resized pixels of a 2048²
    plane (1 × 1: 1.17×), 1.16× of a 4096² one (1.25×).
    """
    about_one_tile = tuple(c * max(1, int(tile // (c * min(1.0, factor)))) for c in chunks)
    if factor >= 1.0 or shape is None:
        return about_one_tile
    limit = (tile + 2 * halo) ** 2

    def lengths(n: int, c: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per block of k chunks along an axis: its one window's and its split windows' length."""
        choices = [
            _axis_choices(lo, min(lo + k * c, n), n, factor, tile, halo)
            for lo in range(0, n, k * c)
        ]
        one = np.array([_length(choice[1]) for choice in choices])
        return one, np.array([_length(choice[2]) for choice in choices])

    first = [lengths(n, c, 1) for n, c in zip(shape, chunks)]
    k_tile = [min(b // c, -(-n // c)) for b, c, n in zip(about_one_tile, chunks, shape)]
    per_axis = []
    for axis, (n, c) in enumerate(zip(shape, chunks)):
        options = {1: first[axis]}  # chunks per block -> lengths
        for k in range(2, -(-n // c) + 1):
            if options[k - 1][0].max() * first[1 - axis][0].max() > limit:
                break  # longer blocks only get longer windows: none of them fits one
            options[k] = lengths(n, c, k)
        if k_tile[axis] not in options:
            options[k_tile[axis]] = lengths(n, c, k_tile[axis])
        per_axis.append(options)

    def computed(ky: int, kx: int) -> float:
        """Pixels the layout computes; blocks other than about one tile must fit one window."""
        (one_y, split_y), (one_x, split_x) = per_axis[0][ky], per_axis[1][kx]
        one = np.outer(one_y, one_x)
        fits = one <= limit
        if (ky, kx) == tuple(k_tile):
            return float(np.where(fits, one, np.outer(split_y, split_x)).sum())
        return float(one.sum()) if fits.all() else math.inf

    best = min((computed(ky, kx), abs(ky - kx), ky, kx) for ky in per_axis[0] for kx in per_axis[1])
    return best[2] * chunks[0], best[3] * chunks[1]


def _prefetch(items: Iterator, depth: int) -> Iterator:
    """Iterate ``items`` in a background thread, ``depth`` ahead (I/O overlaps compute)."""
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as err:  # re-raised in the consumer
            buffer.put(err)

    thread = threading.Thread(target=produce, daemon=True, name="grunet-prefetch")
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class Predictor:
    """A network on a device, ready to predict class probabilities of any image size.

    Attributes:
        in_channels: input channels the network expects.
        sha256: the checkpoint's sha256 ("" for a model not loaded from a file).
        metadata: the checkpoint's training metadata.
        segmentation_options: keyword arguments for :func:`grunet.segment` functions
            (thresholds tuned at training time, when the checkpoint has them).

    Example:
        >>> predictor = Predictor.from_checkpoint(load_checkpoint())  # doctest: +SKIP
        >>> probs = predictor.predict_plane(normalized_cyx)  # (3, Y, X) float32  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        fast: bool = True,
        compile: bool | str = "auto",
        sha256: str = "",
        metadata: dict | None = None,
        path: str | Path | None = None,
        tile: int = DEFAULT_TILE,
        halo: int = DEFAULT_HALO,
        batch_size: int = 1,
        augment: bool = False,
    ):
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.model = model
        self.fast = fast
        self.compile = compile
        self.sha256 = sha256
        self.metadata = dict(metadata or {})
        self.path = None if path is None else Path(path)
        self.tile, self.halo = check_tiling(tile, halo)
        self.batch_size = check_positive("batch_size", batch_size)
        # average the predictions of each window and its mirror images (see ``mirrors``)
        self.augment = bool(augment)
        self._prepared: PreparedModel | None = None
        # the network whose quick passes estimate the object scale (grunet.scale): this one,
        # unless the checkpoint carries a separate scale model
        self.scale_predictor: Predictor = self
        # the network for images upscaled by ``low_magnification[0]`` or more (for_factor;
        # until first needed, the checkpoint parts it is built from)
        self.low_magnification: tuple[float, Any] | None = None
        self.role = "model"  # "low_magnification" for that network (provenance)
        self.network_sha256 = sha256  # of the network itself (a companion's: its own)
        self._std = (0, 0)  # fixed window shape of a compiled run (set per run)
        cfg = getattr(model, "cfg", None)
        self.in_channels = int(cfg.in_channels) if cfg is not None else None
        self.classes = int(cfg.classes) if cfg is not None else 3
        self.stride = int(cfg.stride) if cfg is not None else ALIGN

    @classmethod
    def from_checkpoint(cls, checkpoint, device: str | torch.device = "auto", **options):
        """A predictor for a :class:`grunet.checkpoint.Checkpoint` (or a checkpoint path/None)."""
        from grunet.checkpoint import Checkpoint, load_checkpoint

        if not isinstance(checkpoint, Checkpoint):
            checkpoint = load_checkpoint(checkpoint)
        if checkpoint.metadata.get("task") == "semantic" and options.get("halo") is None:
            # scene classes depend on wide context: see SEMANTIC_HALO
            options["halo"] = int(checkpoint.metadata.get("halo") or SEMANTIC_HALO)
        predictor = cls(
            checkpoint.build_model(),
            device=device,
            sha256=checkpoint.sha256,
            metadata=checkpoint.metadata,
            path=checkpoint.path,
            **options,
        )
        if checkpoint.scale_model is not None:
            scale = checkpoint.scale_model
            predictor.scale_predictor = cls(
                scale.build_model(),
                device=predictor.device,
                fast=predictor.fast,
                compile=False,  # a few small crops: compiling never pays
                sha256=scale.sha256,
                metadata=scale.metadata,
                path=scale.path,
            )
        low = checkpoint.low_magnification_model
        if low is not None:  # built when an image first needs it (for_factor)
            predictor.low_magnification = (float(low.metadata["min_factor"]), (checkpoint, low))
        return predictor

    def for_factor(self, factor: float) -> Predictor:
        """The network that predicts images resized by ``factor``: the checkpoint's
        low-magnification network where it carries one and ``factor`` reaches its
        ``min_factor`` (nuclei a few px across, upscaled and so blurred), else this one.
        It takes this predictor's tiling, batch and compile settings."""
        if self.low_magnification is None or factor < self.low_magnification[0]:
            return self
        min_factor, network = self.low_magnification
        if not isinstance(network, Predictor):  # (checkpoint, its low-magnification part)
            checkpoint, low = network
            network = Predictor(
                low.build_model(),
                device=self.device,
                sha256=checkpoint.sha256,
                metadata={**checkpoint.metadata, **low.metadata},
                path=checkpoint.path,
            )
            network.scale_predictor, network.role = self.scale_predictor, "low_magnification"
            network.network_sha256 = low.sha256
            self.low_magnification = (min_factor, network)
        network.tile, network.halo = self.tile, self.halo
        network.batch_size, network.fast, network.compile, network.augment = (
            self.batch_size,
            self.fast,
            self.compile,
            self.augment,
        )
        return network

    @property
    def segmentation_options(self) -> dict[str, float]:
        """Segmentation thresholds stored with the checkpoint (empty: the segmenter's defaults)."""
        options = self.metadata.get("segmentation") or {}
        return {str(k): float(v) for k, v in options.items()}

    @property
    def task(self) -> str:
        """``"instance"`` or ``"semantic"`` (see :mod:`grunet.task`)."""
        from grunet.task import model_task

        try:
            return model_task(self.metadata)
        except ValueError as err:
            raise CheckpointError(f"{self.path or 'model'}: {err}") from None

    @property
    def semantic(self) -> bool:
        """True for an N-class semantic model (class maps, no object scale, no instances)."""
        from grunet.task import SEMANTIC

        return self.task == SEMANTIC

    @property
    def class_names(self) -> list[str]:
        """Names of the network's outputs, in order."""
        if self.semantic:
            from grunet.task import semantic_classes

            return [c.name for c in semantic_classes(self.metadata, self.classes)]
        return ["background", "interior", "boundary"][: self.classes]

    @property
    def input_scale(self) -> float:
        """Resize factor of a semantic model's inputs (1.0 for instance models)."""
        return float(self.metadata.get("input_scale") or 1.0) if self.semantic else 1.0

    def semantic_scale(self) -> ObjectScale:
        """The fixed input scale of a semantic model; object diameters do not apply."""
        return ObjectScale(
            diameter=0.0, source=NOT_APPLICABLE, model_diameter=0.0, factor=self.input_scale
        )

    def describe_scale(self, scale: ObjectScale) -> dict:
        """The scale for provenance (a semantic model: "not applicable" and its input scale;
        the network that predicted at it, where the low-magnification one did)."""
        if scale.source == NOT_APPLICABLE:
            return {"source": NOT_APPLICABLE, "input_scale": scale.factor}
        network = {} if self.role == "model" else {"network": self.role}  # see for_factor
        return {**scale.describe(), **network}

    @property
    def object_diameter(self) -> float:
        """The nucleus diameter (px) the model works at: ``D0`` of :mod:`grunet.scale`."""
        return float(self.metadata.get("object_diameter") or FALLBACK_OBJECT_DIAMETER)

    def segmentation_options_for(self, scale: ObjectScale | None) -> dict[str, float]:
        """:attr:`segmentation_options` with sizes scaled to the image's objects."""
        if scale is None or scale.factor == 1.0:
            return self.segmentation_options
        from grunet.segmentation import SegmentOptions

        defaults = {k: getattr(SegmentOptions(), k) for k in SegmentOptions.__dataclass_fields__}
        return scaled_lengths(self.segmentation_options, defaults, scale.length_ratio)

    def prepared(self, work_pixels: int | None = None) -> PreparedModel:
        """The model on its device with the fast path (compiled when ``work_pixels`` pays).

        Prepared once and reused: a later, larger job re-prepares only to switch to compiled.
        """
        if self._prepared is None or (
            self.compile == "auto"
            and not self._prepared.compiled
            and self.fast
            and should_compile(self.device, "auto", work_pixels, self.model)
        ):
            candidate = prepare_model(
                self.model,
                self.device,
                fast=self.fast,
                compile=self.compile,
                work_pixels=work_pixels,
            )
            if self._prepared is None or candidate.compiled:
                self._prepared = candidate
        return self._prepared

    def describe(self) -> dict[str, Any]:
        """Options for provenance."""
        network = {}
        if self.role != "model":
            network = {"network": self.role, "network_sha256": self.network_sha256}
        return {
            "model_sha256": self.sha256,
            "model_path": None if self.path is None else str(self.path),
            **network,
            "tile": self.tile,
            "halo": self.halo,
            "batch_size": self.batch_size,
            "augment": len(self.mirrors),
            **(self._prepared.describe() if self._prepared else {"device": str(self.device)}),
        }

    @property
    def mirrors(self) -> tuple[tuple[int, ...], ...]:
        """Flips whose predictions are averaged: the image alone, or with ``augment`` its
        mirror images (micrographs: left-right, up-down and both; scenes: left-right only).

        Test-time augmentation costs one forward pass per flip; measured on the val split it
        lifts F1@0.5 by up to 0.01 (README, "Test-time augmentation").
        """
        if not self.augment:
            return NO_MIRRORS
        return LEFT_RIGHT_MIRRORS if self.semantic else MIRRORS

    def with_augment(self, augment: bool) -> Predictor:
        """This predictor if its ``augment`` is already ``augment``, else a shallow copy (same
        networks and prepared model) with it set: the caller's predictor keeps its setting."""
        if bool(augment) == self.augment:
            return self
        other = copy.copy(self)
        other.augment = bool(augment)
        return other

    def check_channels(self, channels: int, where: str | Path | None) -> None:
        """Refuse an image whose channel count differs from the network's, naming both."""
        if self.in_channels is not None and channels != self.in_channels:
            model = self.path or "the model"
            raise InputError(
                where,
                f"image has {channels} channel(s) but {model} expects {self.in_channels}; "
                "convert the image with the channels the model was trained on, or use a model "
                f"trained on {channels}-channel images",
            )

    # -- the engine -------------------------------------------------------------------------

    def batch_pixels(self) -> int:
        """Pixels one forward pass may hold: ``batch_size`` full windows (tile + 2·halo)².

        Small windows (small planes, the z-planes or t-frames of a stack) are batched up to this
        budget, so they cost what the same pixels cost in one large window: a forward pass has a
        fixed cost of a few hundred kernel launches, whatever its size. Memory per pass stays
        that of ``batch_size`` full windows.
        """
        side = _round_up(self.tile + 2 * self.halo, self.stride)
        return self.batch_size * side * side

    def _padded_pixels(self, window: tuple[int, int, int, int]) -> int:
        """Pixels the network computes for ``window`` (padded as in :meth:`_run_windows`)."""
        wy, wx = window[1] - window[0], window[3] - window[2]
        wy, wx = (
            max(_round_up(wy, self.stride), self._std[0]),
            max(_round_up(wx, self.stride), self._std[1]),
        )
        return wy * wx

    def _forward(self, prepared: PreparedModel, inputs: list[np.ndarray]) -> np.ndarray:
        """Probabilities (B, classes, y, x) float32 of equally shaped (C, y, x) windows."""
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(inputs)))
        if prepared.device.type == "cuda":
            batch = batch.pin_memory()
        return prepared.probabilities(batch, self.mirrors).cpu().numpy()

    def _run_windows(self, prepared, work: list, shape_of) -> None:
        """Run (block, window) pairs grouped by window shape; blend into their blocks."""
        groups: dict[tuple[int, int], list] = {}
        for block, window in work:
            size = (window[1] - window[0], window[3] - window[2])
            groups.setdefault(size, []).append((block, window))
        for size, items in groups.items():
            inputs = [block.window_input(window) for block, window in items]
            pad_to = size
            if prepared.compiled:  # fixed shapes: no recompiles for edge windows
                pad_to = (_round_up(size[0], self.stride), _round_up(size[1], self.stride))
                pad_to = (max(pad_to[0], self._std[0]), max(pad_to[1], self._std[1]))
                inputs = [
                    np.pad(x, ((0, 0), (0, pad_to[0] - size[0]), (0, pad_to[1] - size[1])), "edge")
                    for x in inputs
                ]
                full = max(self.batch_size, self.batch_pixels() // (pad_to[0] * pad_to[1]))
                inputs += [inputs[-1]] * (full - len(inputs))  # one batch shape per window shape
            probs = self._forward(prepared, inputs)
            for (block, window), p in zip(items, probs):
                block.add(window, p[:, : size[0], : size[1]], shape_of(block), self.halo)

    def run_blocks(
        self,
        blocks: Iterator[Block],
        shape_of: Callable[[Block], tuple[int, int]],
        *,
        work_pixels: int | None = None,
        total_windows: int | None = None,
        progress: bool = False,
        prefetch: int = 2,
        window_shape: tuple[int, int] | None = None,
    ) -> Iterator[tuple[Block, np.ndarray]]:
        """Yield (block, (classes, by, bx) probabilities) for blocks whose ``image`` is loaded.

        ``blocks`` is consumed in a background thread ``prefetch`` blocks ahead, so reading and
        normalising the next input overlaps the forward pass of the current batch.
        ``window_shape``: the largest window of the blocks (:func:`largest_window`), the one
        shape a compiled model is run at (default: a tile with its halos, clipped to the plane).
        """
        prepared = self.prepared(work_pixels)
        bar = tqdm(
            total=total_windows,
            desc="predict",
            unit="tile",
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        )
        self._std = (0, 0)
        budget = self.batch_pixels()
        pending: list = []
        pending_pixels = 0
        open_blocks: list[Block] = []
        with bar:
            # On a CPU the reader thread would compete with torch's threads for the same cores
            # (OpenMP barriers stall when a core is taken); overlap pays on accelerators only.
            source = blocks if prepared.device.type == "cpu" else _prefetch(blocks, prefetch)
            for block in source:
                if prepared.compiled and self._std == (0, 0):  # the largest window of a plane
                    longest = window_shape or [
                        min(self.tile + 2 * self.halo, n) for n in shape_of(block)
                    ]
                    self._std = tuple(_round_up(n, self.stride) for n in longest)
                open_blocks.append(block)
                for window in block.windows:
                    pixels = self._padded_pixels(window)
                    if pending and pending_pixels + pixels > budget:
                        self._run_windows(prepared, pending, shape_of)
                        bar.update(len(pending))
                        pending, pending_pixels = [], 0
                    pending.append((block, window))
                    pending_pixels += pixels
                while open_blocks and open_blocks[0].remaining == 0:
                    done = open_blocks.pop(0)
                    yield done, done.result()
            if pending:
                self._run_windows(prepared, pending, shape_of)
                bar.update(len(pending))
            for done in open_blocks:
                yield done, done.result()

    # -- public entry points ----------------------------------------------------------------

    def predict_plane(
        self,
        image: np.ndarray,
        *,
        tile: int | None = None,
        halo: int | None = None,
        factor: float = 1.0,
        progress: bool = False,
    ) -> np.ndarray:
        """Class probabilities of one normalised 2D plane, tile by tile with blending.

        Args:
            image: ``(C, Y, X)`` (or ``(Y, X)`` for one channel) float intensities, already
                normalised (see :func:`grunet.preprocess.normalize_channels`).
            tile: window core size (default: the predictor's, 1024); rounded up to 32.
            halo: context on every side of a core (default 32); rounded up to 32.
            factor: resize the plane by this before the network (object scale, see
                :mod:`grunet.scale`); the probabilities come back on the plane's own grid.
            progress: show a progress bar over tiles.

        Returns:
            ``(classes, Y, X)`` float32 probabilities (background, interior, boundary).

        Example:
            >>> probs = predictor.predict_plane(normalize_channels(image))  # doctest: +SKIP
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3 or min(image.shape) == 0:
            raise InputError(None, f"predict_plane expects a (C, Y, X) image, got {image.shape}")
        self.check_channels(image.shape[0], None)
        if factor != 1.0:
            shape = image.shape[1:]
            small = resample(image, shape, scaled_shape(shape, factor))
            network = self.for_factor(factor)
            probs = network.predict_plane(small, tile=tile, halo=halo, progress=progress)
            return resample(probs, probs.shape[1:], shape)
        tile, halo = check_tiling(
            self.tile if tile is None else tile, self.halo if halo is None else halo
        )
        saved = self.tile, self.halo
        self.tile, self.halo = tile, halo
        try:
            shape = image.shape[1:]
            out = np.empty((self.classes, *shape), dtype=np.float32)
            blocks = plan_blocks(shape, shape, tile, halo)  # one block: blend globally

            def loaded():
                for block in blocks:
                    block.image = image[
                        :, block.region[0] : block.region[1], block.region[2] : block.region[3]
                    ]
                    yield block

            total = sum(len(b.windows) for b in blocks)
            for block, probs in self.run_blocks(
                loaded(),
                lambda b: shape,
                work_pixels=int(np.prod(shape)),
                total_windows=total,
                progress=progress,
                prefetch=1,
            ):
                out[:, block.y0 : block.y1, block.x0 : block.x1] = probs
            return out
        finally:
            self.tile, self.halo = saved


def check_tiling(tile: int, halo: int) -> tuple[int, int]:
    """Validate tile/halo and round them up to multiples of 32 (the pooling stride)."""
    tile = check_positive("tile", tile)
    if int(halo) < 0:
        raise ConfigError(f"halo: must be >= 0, got {halo}")
    return _round_up(tile, ALIGN), _round_up(int(halo), ALIGN)


def check_positive(name: str, value: int) -> int:
    if int(value) < 1:
        raise ConfigError(f"{name}: must be a positive integer, got {value}")
    return int(value)


def _as_predictor(model, device, **options) -> Predictor:
    if isinstance(model, Predictor):
        return model
    from grunet.checkpoint import Checkpoint, load_checkpoint

    checkpoint = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    return Predictor.from_checkpoint(checkpoint, device=device, **options)


def _image_array(image_store: Path, stack):
    """The store's full-resolution array: zarr itself where possible (no dask overhead)."""
    import zarr

    try:
        array = zarr.open_array(str(image_store / "0"), mode="r")
        if tuple(array.shape) == tuple(stack.shape):
            return array, (int(array.chunks[-2]), int(array.chunks[-1]))
    except Exception:  # not a plain array at "0": read through the io layer's dask array
        pass
    chunks = stack.data.chunksize
    return stack.data, (int(chunks[-2]), int(chunks[-1]))


def normalize_raw(raw: np.ndarray, channels: list[int], norm) -> np.ndarray:
    """Normalise the ``channels`` of a raw ``(C, y, x)`` region: per-channel ``(lo, hi)``
    ranges (a list), or a semantic checkpoint's fixed mean/std (a dict)."""
    if isinstance(norm, dict):
        from grunet.task import normalize_mean_std

        return normalize_mean_std(raw[list(channels)], norm)
    from grunet.preprocess import normalize

    return np.stack([normalize(raw[c], *norm[c]) for c in channels])


def _store_ranges(stack, path: Path, predictor: Predictor | None = None):
    """The normalisation of a store's channels: the model's mean/std (semantic checkpoints),
    else the store's per-channel percentile ranges."""
    if predictor is not None:
        from grunet.task import uses_mean_std

        norm = predictor.metadata.get("normalization") or {}
        if uses_mean_std(norm):
            return dict(norm)
    ranges = stack.normalization_ranges
    if ranges is None:
        from grunet.io import percentile_range_dask

        ranges = percentile_range_dask(stack.data, channel_axis=1)
    if len(ranges) != stack.shape[1]:
        raise InputError(
            path, f"normalization ranges list {len(ranges)} channels, image has {stack.shape[1]}"
        )
    return [(float(lo), float(hi)) for lo, hi in ranges]


def _load_region(
    data, ranges, block: Block, channels: list[int] | None = None, factor: float = 1.0
) -> Block:
    """Read and normalise a block's input region (runs in the prefetch thread).

    For a rescaled block (``out_box`` set) the region lies on the resized grid: its support in
    the original plane is read and resampled.
    """
    t, z = block.plane
    y0, y1, x0, x1 = block.region
    shape = tuple(int(n) for n in data.shape[-2:])
    if block.out_box is not None:
        scaled = scaled_shape(shape, factor)
        y0, y1, x0, x1 = support(shape, scaled, block.region)
    raw = np.asarray(data[t, :, z, y0:y1, x0:x1])
    channels = list(range(len(raw))) if channels is None else channels
    block.image = normalize_raw(raw, channels, ranges)
    if block.out_box is not None:
        block.image = resample(block.image, shape, scaled, block.region, origin=(y0, x0))
    return block


def _unscale(block: Block, probs: np.ndarray, shape, factor: float):
    """(original box, probabilities on the original grid) of a finished block."""
    if block.out_box is None:
        return (block.y0, block.y1, block.x0, block.x1), probs
    scaled = scaled_shape(shape, factor)
    return block.out_box, resample(probs, scaled, shape, block.out_box, (block.y0, block.x0))


class StorePlane:
    """One (t, z) plane of a store as a lazy, normalised ``(C, Y, X)`` array (sliced on demand)."""

    def __init__(self, data, ranges, channels: list[int], t: int, z: int):
        self.data, self.ranges, self.channels, self.t, self.z = data, ranges, channels, t, z
        self.shape = (len(channels), *(int(n) for n in data.shape[-2:]))

    def __getitem__(self, index) -> np.ndarray:
        _, ys, xs = index
        raw = np.asarray(self.data[self.t, :, self.z, ys, xs])
        return normalize_raw(raw, self.channels, self.ranges)


def store_scale(
    predictor,
    stack,
    image_store: Path,
    planes: list[StorePlane],
    diameter: float | None,
    diameter_um: float | None,
    estimate: bool = True,
) -> ObjectScale:
    """The object scale of a store: given (px or µm with its pixel size) or estimated.

    The estimate looks at one plane, the middle (t, z): nuclei keep their size over a
    time-lapse and a stack, and one plane keeps its cost flat.
    """
    from grunet.scale import estimate_diameter, resolve_scale

    sizes = [stack.pixel_sizes.get(k) for k in ("y", "x")]
    pixel_size = float(np.sqrt(sizes[0] * sizes[1])) if None not in sizes else None

    def estimated() -> float | None:
        return estimate_diameter(predictor, [planes[len(planes) // 2]]).diameter

    return resolve_scale(
        predictor.object_diameter,
        diameter=diameter,
        diameter_um=diameter_um,
        pixel_size_um=pixel_size,
        estimate=estimated if estimate else None,
        where=image_store,
    )


NUCLEAR_STAINS = ("dapi", "hoechst", "draq5", "h2b", "nuc", "sir-dna")  # suggested, never chosen


def _choose_channels(names: list[str], predictor: Predictor) -> str:
    """Why an image's channels cannot all go to the network, and how to pick the right ones."""
    import shlex

    wanted = predictor.in_channels
    guess = [n for n in names if any(s in n.lower() for s in NUCLEAR_STAINS)][:wanted]
    example = ",".join(guess if len(guess) == wanted else names[:wanted])
    return (
        f"has {len(names)} channels ({', '.join(names)}) but {predictor.path or 'the model'} "
        f"reads {wanted}; name the channel(s) it should read"
        f"{'' if predictor.semantic else ' (its nuclear stain)'}: "
        f"--channels {shlex.quote(example)} (by name or index; the sample sheet's 'channels' "
        "column, the 'channels' argument in Python)"
    )


def select_channels(
    wanted: list[str | int] | None, names: list[str], store: Path | str, predictor: Predictor
) -> list[int]:
    """Indices of the store's channels to feed the network, in the network's order.

    ``wanted`` lists channel names or indices; without it all channels are used, unless the
    checkpoint's metadata names its training channels (``"channel_names"``) and the store has
    them all.
    """
    if wanted is None:
        trained = predictor.metadata.get("channel_names")
        if trained and len(names) != predictor.in_channels and set(trained) <= set(names):
            wanted = list(trained)
        elif predictor.in_channels is not None and len(names) > predictor.in_channels:
            raise InputError(store, _choose_channels(names, predictor))
        else:
            predictor.check_channels(len(names), store)
            return list(range(len(names)))
    indices = []
    for item in wanted:
        if isinstance(item, int) or str(item).isdigit():
            index = int(item)
            if not 0 <= index < len(names):
                raise ConfigError(f"channels: index {index} out of range for {store} ({names})")
        elif item in names:
            index = names.index(item)
        else:
            raise ConfigError(f"channels: {item!r} is not a channel of {store} ({names})")
        indices.append(index)
    predictor.check_channels(len(indices), store)
    return indices


def predict_store(
    image_store: str | Path,
    out_path: str | Path,
    *,
    model=None,
    tile: int | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    compile: bool | str = "auto",
    scheduler: str | None = None,
    channels: list[str | int] | None = None,
    diameter: float | None = None,
    diameter_um: float | None = None,
    augment: bool | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Class probabilities of every (t, z) plane of a canonical OME-Zarr store, as float16 zarr.

    Reads the image lazily, one block (output chunk) at a time with ``halo`` context, normalises
    it with the store's per-channel ranges, runs the network tile by tile with blending, and
    writes ``out_path`` (group with array ``"probs"``, shape (T, 3, Z, Y, X), chunks
    (1, 3, 1, cy, cx) = the image's YX chunks) atomically. Memory stays flat in the image size.

    Object scale (:mod:`grunet.scale`): planes are resized so that their nuclei have the model's
    diameter, block by block (each block reads the original pixels its resized windows need),
    and the probabilities are resampled back to the image's grid. The diameter comes from
    ``diameter`` (px), else ``diameter_um`` and the store's pixel size, else an estimate; it is
    recorded in the attrs (``object_scale``) with the segmentation sizes scaled to it.

    Args:
        image_store: ``<sample>.ome.zarr`` written by ``grunet convert``.
        out_path: the ``<sample>.probs.zarr`` group to create.
        model: checkpoint path, :class:`~grunet.checkpoint.Checkpoint`, :class:`Predictor`, or
            None for the model shipped with grunet.
        tile: window core size (default 1024); halo: context per side (default: the model's,
            32 for instance models, 128 for semantic ones).
        batch_size: windows per forward pass (default 1 on CPU, 4 on GPU).
        device: "auto", "cpu", "cuda" or "mps".
        threads: torch intra-op threads on CPU (default: torch's choice).
        compile: torch.compile the model: "auto" (when the job is large enough), True, False.
        scheduler: a dask-distributed scheduler address; blocks then run as tasks on its
            workers (which need the checkpoint and both stores on a shared file system).
        channels: names or indices of the store's channels to use, in the model's order
            (default: all; or the checkpoint's training channels where it names them).
        diameter: typical nucleus diameter in the image, px (None: ``diameter_um`` or estimate).
        diameter_um: typical nucleus diameter in micrometres (needs the store's pixel size).
        augment: average each window's predictions with its mirror images' (4 passes; see
            :attr:`Predictor.mirrors`); None keeps the predictor's setting (off by default).
        overwrite: replace an existing ``out_path``.
        progress: progress bar over tiles on stderr.

    Returns:
        ``out_path``.

    Example:
        >>> predict_store("a.ome.zarr", "a.probs.zarr", tile=512)  # doctest: +SKIP
    """
    import zarr

    from grunet.atomic import atomic_output, check_output_free
    from grunet.io import open_store, scratch_compressors
    from grunet.memory import keep_large_buffers_off_heap

    image_store, out_path = Path(image_store), Path(out_path)
    check_output_free(out_path, overwrite)
    keep_large_buffers_off_heap()  # peak RSS = working set, whatever the store's size
    if threads:
        torch.set_num_threads(check_positive("threads", threads))
    predictor = _as_predictor(model, device, compile=compile)
    if tile is not None or halo is not None:  # also when handed a ready Predictor
        predictor.tile, predictor.halo = check_tiling(
            predictor.tile if tile is None else tile, predictor.halo if halo is None else halo
        )
    if batch_size is not None:
        predictor.batch_size = check_positive("batch_size", batch_size)
    elif predictor.device.type == "cuda" and not isinstance(model, Predictor):
        predictor.batch_size = 4
    if augment is not None:
        predictor.augment = bool(augment)
    stack = open_store(image_store)
    n_t, n_c, n_z, n_y, n_x = stack.shape
    channel_index = select_channels(channels, stack.channel_names, image_store, predictor)
    ranges = _store_ranges(stack, image_store, predictor)
    source, (cy, cx) = _image_array(image_store, stack)
    planes = [(t, z) for t in range(n_t) for z in range(n_z)]
    if predictor.semantic:  # a fixed input scale from the checkpoint; no object diameter
        scale = predictor.semantic_scale()
    else:
        scale = store_scale(
            predictor,
            stack,
            image_store,
            [StorePlane(source, ranges, channel_index, t, z) for t, z in planes],
            diameter,
            diameter_um,
        )
    factor = scale.factor
    predictor = predictor.for_factor(factor)
    block = scaled_block_size((cy, cx), predictor.tile, factor, predictor.halo, (n_y, n_x))
    layout = plan_scaled_blocks((n_y, n_x), block, predictor.tile, predictor.halo, factor)
    total_windows = len(planes) * sum(len(b.windows) for b in layout)
    work_pixels = len(planes) * sum(
        (w[1] - w[0]) * (w[3] - w[2]) for b in layout for w in b.windows
    )
    prepared = predictor.prepared(work_pixels)
    attrs = {
        "version": __version__,
        "source": str(image_store),
        "shape": [n_t, predictor.classes, n_z, n_y, n_x],
        "axes": "tczyx",
        "task": predictor.task,
        "classes": predictor.class_names,
        "channel_names": [stack.channel_names[i] for i in channel_index],
        "pixel_sizes": dict(stack.pixel_sizes),
        **_normalization_attrs(ranges),
        "object_scale": predictor.describe_scale(scale),
        "segmentation": {} if predictor.semantic else predictor.segmentation_options_for(scale),
        **predictor.describe(),
        **prepared.describe(),
    }
    with atomic_output(out_path, overwrite=overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        target = group.create_array(
            PROBS_NAME,
            shape=(n_t, predictor.classes, n_z, n_y, n_x),
            chunks=(1, predictor.classes, 1, min(cy, n_y), min(cx, n_x)),
            dtype="float16",
            compressors=scratch_compressors(),
        )
        if scheduler:
            _predict_distributed(
                scheduler,
                predictor,
                image_store,
                tmp,
                (n_y, n_x),
                planes,
                block,
                progress,
                total_windows,
                channel_index,
                factor,
                window_shape=largest_window(layout),
            )
        else:
            _predict_local(
                predictor,
                source,
                ranges,
                channel_index,
                target,
                planes,
                block,
                layout,
                work_pixels,
                total_windows,
                progress,
                factor,
            )
        group.attrs["grunet"] = attrs
    return out_path


def _normalization_attrs(norm) -> dict:
    if isinstance(norm, dict):
        return {"normalization": norm}
    return {"normalization_ranges": [list(r) for r in norm]}


def as_float16(probs: np.ndarray) -> np.ndarray:
    """``probs.astype(np.float16)`` (same rounding) through torch's vectorised conversion:
    numpy converts element by element, 3-5x slower (23 vs 5-9 ms per 1024² block of 3
    classes), which showed as 4 % of predicting a plane."""
    return torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).half().numpy()


def _fresh_blocks(layout: list[Block], plane) -> list[Block]:
    return [Block(plane, b.y0, b.y1, b.x0, b.x1, b.windows, out_box=b.out_box) for b in layout]


def _predict_local(
    predictor,
    data,
    ranges,
    channels,
    target,
    planes,
    block,
    layout,
    work_pixels,
    total_windows,
    progress,
    factor=1.0,
) -> None:
    """Stream blocks through the model in this process; a writer thread stores results."""
    shape = tuple(int(n) for n in data.shape[-2:])
    network_shape = scaled_shape(shape, factor)

    def blocks():
        for plane in planes:
            for b in _fresh_blocks(layout, plane):
                yield _load_region(data, ranges, b, channels, factor)

    writes: queue.Queue = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def store(item) -> None:
        (t, z, y0, y1, x0, x1), probs = item
        target[t, :, z, y0:y1, x0:x1] = probs

    def writer():
        while (item := writes.get()) is not None:
            if failure:
                continue
            try:
                store(item)
            except BaseException as err:  # reported in the main thread
                failure.append(err)

    inline = predictor.device.type == "cpu"  # see run_blocks: no competing threads on a CPU
    thread = None if inline else threading.Thread(target=writer, daemon=True, name="grunet-writer")
    if thread:
        thread.start()
    try:
        for b, probs in predictor.run_blocks(
            blocks(),
            lambda _: network_shape,
            work_pixels=work_pixels,
            total_windows=total_windows,
            progress=progress,
            window_shape=largest_window(layout),
        ):
            if failure:
                break
            box, probs = _unscale(b, probs, shape, factor)
            item = ((*b.plane, *box), as_float16(probs))
            if inline:
                store(item)
            else:
                writes.put(item)
    finally:
        if thread:
            writes.put(None)
            thread.join()
    if failure:
        raise failure[0]


_WORKER_PREDICTORS: dict = {}


def _predict_block_task(
    checkpoint: str,
    options: dict,
    image_store: str,
    out_group: str,
    plane,
    box,
    channels,
    factor,
    window_shape=None,
) -> int:
    """One block on a dask-distributed worker: load (once) the model, predict, write.

    ``window_shape``: the plane's largest window, the one shape a compiled model runs at.
    """
    import zarr

    from grunet.io import open_store

    key = (checkpoint, tuple(sorted(options.items())))
    if key not in _WORKER_PREDICTORS:
        _WORKER_PREDICTORS[key] = _as_predictor(checkpoint, options.pop("device"), **options)
    predictor = _WORKER_PREDICTORS[key].for_factor(factor)
    stack = open_store(image_store)
    ranges = _store_ranges(stack, Path(image_store), predictor)
    source, _ = _image_array(Path(image_store), stack)
    shape = tuple(int(n) for n in stack.shape[-2:])
    block = scaled_block(box, shape, predictor.tile, predictor.halo, factor, tuple(plane))
    block = _load_region(source, ranges, block, channels, factor)
    target = zarr.open_array(str(Path(out_group) / PROBS_NAME), mode="r+")
    network_shape = scaled_shape(shape, factor)
    windows = len(block.windows)
    for done, probs in predictor.run_blocks(
        iter([block]), lambda _: network_shape, prefetch=1, window_shape=window_shape
    ):
        t, z = done.plane
        (y0, y1, x0, x1), probs = _unscale(done, probs, shape, factor)
        target[t, :, z, y0:y1, x0:x1] = as_float16(probs)
    return windows


def _predict_distributed(
    address,
    predictor,
    image_store,
    out_group,
    shape,
    planes,
    block,
    progress,
    total_windows,
    channels,
    factor=1.0,
    window_shape: tuple[int, int] | None = None,
) -> None:
    """Run every block as a task on a dask-distributed cluster (shared file system needed).

    ``window_shape``: the plane's largest window (:func:`largest_window`), which a compiled
    model on the workers runs every window at.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ConfigError(
            "scheduler: a scheduler address needs dask.distributed; pip install distributed"
        ) from None
    if predictor.path is None:
        raise ConfigError("scheduler: distributed prediction needs a model loaded from a file")
    n_y, n_x = shape
    options = {
        "device": str(predictor.device.type),
        "tile": predictor.tile,
        "halo": predictor.halo,
        "batch_size": predictor.batch_size,
        "compile": predictor.compile,
        "augment": predictor.augment,
    }
    boxes = [
        (y0, min(y0 + block[0], n_y), x0, min(x0 + block[1], n_x))
        for y0 in range(0, n_y, block[0])
        for x0 in range(0, n_x, block[1])
    ]
    with Client(address) as client:
        futures = [
            client.submit(
                _predict_block_task,
                str(predictor.path.resolve()),
                dict(options),
                str(Path(image_store).resolve()),
                str(Path(out_group).resolve()),
                plane,
                box,
                channels,
                factor,
                window_shape,
                pure=False,
            )
            for plane in planes
            for box in boxes
        ]
        bar = tqdm(
            total=total_windows, desc="predict", unit="tile", file=sys.stderr, disable=not progress
        )
        with bar:
            for future in as_completed(futures):
                bar.update(future.result())
