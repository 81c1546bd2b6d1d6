"""Object scale: the factor an image is resized by so that its nuclei have the model's diameter.

A model works at a canonical nucleus diameter ``D0`` (pixels, ``Predictor.object_diameter``,
recorded in the checkpoint as ``metadata["object_diameter"]``). An image whose nuclei are ``D``
pixels across is resized by ``factor = D0 / D`` before the network sees it, and the
probabilities are resized back, so every output lies on the image's own pixel grid.

``D`` comes from, in order: a diameter in pixels; a diameter in micrometres divided by the
image's pixel size; else :func:`estimate_diameter` (see there for the method).

Resizing is a separable linear (triangle-kernel) resampling whose kernel widens to ``1/factor``
input pixels when shrinking (antialiasing). Each output pixel is a fixed weighted sum of input
pixels around its own position in the whole plane, so a crop of the resized plane is exactly the
resized crop of the input's support: tiles of a zarr store resized one by one agree with the
whole plane resized at once, at any factor, with memory bounded by the tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from grunet.errors import InputError

# Factors outside this range are refused: at ×1/32 a 1024² tile holds 32k² input pixels and a
# nucleus of D0 = 19 px would be ~600 px across; at ×8 it would be ~2 px. Both are input errors
# (a diameter in the wrong unit), not experiments.
MIN_FACTOR, MAX_FACTOR = 1 / 32, 8.0

# D0 of checkpoints that do not record ``object_diameter`` (the first shipped model): the median
# over cells of the equivalent diameter 2·sqrt(area/π) of the labels it was trained on, measured
# once on the 3887 nuclei of the 100 ``train`` images of ../shared/data/dsb2018_fluo (19.18 px;
# per-image medians range 9-94 px, val split 22.6 px).
FALLBACK_OBJECT_DIAMETER = 19.18

# Upscaling factor from which a checkpoint's low-magnification network, where it carries one,
# predicts instead of its main network (``Predictor.for_factor``): nuclei at most half the model's
# diameter, whose images reach the network blurred by the upscaling. Measured on the dsb2018_fluo
# val images (labels' diameter, shipped networks): from x2 on, the low-magnification network wins
# on images shrunk x0.33 (F1 0.873 -> 0.889) and changes nothing at x1; from x1 on it would cost
# 0.013 at x1, where native images of small nuclei are sharp.
LOW_MAGNIFICATION = 2.0

Box = tuple[int, int, int, int]  # y0, y1, x0, x1


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """(Y, X) of a plane resized by ``factor`` (at least 1 px per axis)."""
    return tuple(max(1, int(round(n * factor))) for n in shape)


def axis_matrix(n_in: int, n_out: int, lo: int, hi: int) -> tuple[sparse.csr_matrix, int, int]:
    """Rows ``[lo, hi)`` of the ``n_out × n_in`` resampling matrix of one axis.

    Output pixel ``i`` sits at input position ``(i + 0.5) · n_in / n_out - 0.5``; its weights are
    a triangle of half-width ``max(1, n_in / n_out)`` input pixels, truncated at the axis ends
    and renormalised. Returns the rows restricted to their support columns ``[c0, c1)``.
    """
    step = n_in / n_out
    width = max(1.0, step)
    rows = np.arange(lo, hi)
    centre = (rows + 0.5) * step - 0.5
    first = np.floor(centre - width).astype(np.int64) + 1
    taps = int(math.ceil(2 * width)) + 1
    cols = first[:, None] + np.arange(taps)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs(cols - centre[:, None]) / width)
    weights[(cols < 0) | (cols >= n_in)] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    keep = weights > 0
    c0, c1 = int(cols[keep].min()), int(cols[keep].max()) + 1
    row_index = np.broadcast_to(np.arange(hi - lo)[:, None], cols.shape)[keep]
    matrix = sparse.csr_matrix(
        (weights[keep].astype(np.float32), (row_index, cols[keep] - c0)), shape=(hi - lo, c1 - c0)
    )
    return matrix, c0, c1


def support(in_shape: tuple[int, int], out_shape: tuple[int, int], box: Box) -> Box:
    """The input box whose pixels the output ``box`` of a resize depends on."""
    _, y0, y1 = axis_matrix(in_shape[0], out_shape[0], box[0], box[1])
    _, x0, x1 = axis_matrix(in_shape[1], out_shape[1], box[2], box[3])
    return y0, y1, x0, x1


def resample(
    data: np.ndarray,
    in_shape: tuple[int, int],
    out_shape: tuple[int, int],
    box: Box | None = None,
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """The ``box`` of a ``(C, Y, X)`` plane resized from ``in_shape`` to ``out_shape``.

    Args:
        data: ``(C, ry, rx)`` input pixels covering at least :func:`support` of ``box``.
        in_shape, out_shape: (Y, X) of the whole input and output planes.
        box: output box (default: the whole output plane).
        origin: plane position of ``data[:, 0, 0]``.

    Returns:
        ``(C, by, bx)`` float32.
    """
    box = (0, out_shape[0], 0, out_shape[1]) if box is None else box
    my, y0, y1 = axis_matrix(in_shape[0], out_shape[0], box[0], box[1])
    mx, x0, x1 = axis_matrix(in_shape[1], out_shape[1], box[2], box[3])
    oy, ox = origin
    if y0 < oy or x0 < ox or y1 - oy > data.shape[1] or x1 - ox > data.shape[2]:
        raise ValueError(f"data at {origin} of shape {data.shape} misses the support of {box}")
    out = np.empty((data.shape[0], box[1] - box[0], box[3] - box[2]), dtype=np.float32)
    for c, channel in enumerate(data):
        rows = my @ np.asarray(channel[y0 - oy : y1 - oy, x0 - ox : x1 - ox], dtype=np.float32)
        out[c] = (mx @ rows.T).T
    return out


def resized_annotated(
    image: np.ndarray, labels: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D image as if acquired at ``factor`` × its magnification (this module's resampling,
    float32) and its labels on the same grid (nearest pixel centre).

    How the scale tests and benchmarks make nuclei of other sizes out of annotated images.
    """
    if factor == 1:
        return np.asarray(image, np.float32), labels
    shape = scaled_shape(image.shape, factor)
    out = resample(np.asarray(image, np.float32)[None], image.shape, shape)[0]
    rows = np.minimum(((np.arange(shape[0]) + 0.5) / factor).astype(int), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) / factor).astype(int), labels.shape[1] - 1)
    return out, labels[rows][:, cols]


# ------------------------------------------------------------------------------ which diameter


@dataclass(frozen=True)
class ObjectScale:
    """The object scale chosen for one image, recorded with every output."""

    diameter: float  # nucleus diameter in the image, px
    source: str  # "diameter" (given, px), "diameter_um" (given, µm), "estimated", "model" (none)
    model_diameter: float  # D0 of the model, px
    factor: float  # resize factor actually applied (1.0 = the image as it is)
    diameter_um: float | None = None  # when given in µm
    pixel_size_um: float | None = None  # the image's pixel size used for it

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def length_ratio(self) -> float:
        """Object size on the image's grid relative to the model's: scales post-processing."""
        return 1.0 / self.factor


def check_diameter(value, option: str, where: str | Path | None) -> float:
    """A finite positive number, else an error naming ``option`` and ``where``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(where, f"{option}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise InputError(where, f"{option}: must be a positive number, got {value!r}")
    return number


def _check_factor(factor: float, diameter: float, option: str, where, model_diameter) -> float:
    if not MIN_FACTOR <= factor <= MAX_FACTOR:
        low, high = model_diameter / MAX_FACTOR, model_diameter / MIN_FACTOR
        raise InputError(
            where,
            f"{option}: a nucleus diameter of {diameter:g} px is outside the range the model "
            f"can be rescaled to ({low:.3g}-{high:.3g} px; the model works at "
            f"{model_diameter:.3g} px); check the value and its unit",
        )
    return factor


def resolve_scale(
    model_diameter: float,
    *,
    diameter: float | None = None,
    diameter_um: float | None = None,
    pixel_size_um: float | None = None,
    estimate: Callable[[], float | None] | None = None,
    where: str | Path | None = None,
) -> ObjectScale:
    """The object scale of one image: a given px diameter, else µm, else an estimate, else none.

    Args:
        model_diameter: the model's ``D0`` (px).
        diameter: nucleus diameter in the image, px (``--diameter``).
        diameter_um: nucleus diameter in micrometres (``--diameter-um``); needs ``pixel_size_um``.
        pixel_size_um: the image's YX pixel size in micrometres (from its OME metadata).
        estimate: called when neither is given; returns the estimated diameter in px, or None
            when it finds no objects. Without it (or with no objects) the image is used as it is.
        where: the image's path, for error messages.

    Returns:
        :class:`ObjectScale`.

    Example:
        >>> resolve_scale(19.2, diameter=38.4).factor
        0.5
    """
    if diameter is not None and diameter_um is not None:
        raise InputError(where, "give either a diameter in px or in µm (--diameter-um), not both")
    if diameter is not None:
        d = check_diameter(diameter, "--diameter", where)
        factor = _check_factor(model_diameter / d, d, "--diameter", where, model_diameter)
        return ObjectScale(d, "diameter", model_diameter, factor)
    if diameter_um is not None:
        um = check_diameter(diameter_um, "--diameter-um", where)
        if pixel_size_um is None or not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise InputError(
                where,
                "--diameter-um: the image has no physical pixel size in its metadata; give the "
                "diameter in px (--diameter) or the pixel size when converting (--pixel-size)",
            )
        d = um / pixel_size_um
        factor = _check_factor(model_diameter / d, d, "--diameter-um", where, model_diameter)
        return ObjectScale(d, "diameter_um", model_diameter, factor, um, pixel_size_um)
    if estimate is None:
        return ObjectScale(model_diameter, "model", model_diameter, 1.0)
    d = estimate()
    if d is None:  # no objects at any factor (an empty image): use it as it is
        return ObjectScale(model_diameter, "model", model_diameter, 1.0)
    factor = float(np.clip(model_diameter / d, MIN_FACTOR, MAX_FACTOR))
    return ObjectScale(float(d), "estimated", model_diameter, factor)


def scaled_lengths(options: dict, defaults: dict, ratio: float) -> dict:
    """Post-processing sizes of ``SegmentOptions`` for objects ``ratio`` × the model's diameter.

    ``options`` (the checkpoint's) and ``defaults`` (``SegmentOptions``' own) are meant at the
    model's scale: lengths (``grow_radius``) are multiplied by ``ratio``, areas
    (``min_seed_size``, ``max_hole_size``, ``min_size``) by ``ratio²``. Values a user gives
    later (``grunet segment --min-size``) are pixels of the image and are not scaled.
    """
    out = dict(options)
    powers = {"grow_radius": 1, "min_seed_size": 2, "max_hole_size": 2, "min_size": 2}
    for key, power in powers.items():
        base = options.get(key, defaults[key])
        out[key] = int(round(float(base) * ratio**power))
    return out


# ------------------------------------------------------------------------------ estimation

CANDIDATE_FACTORS = tuple(2.0 ** (k / 2) for k in range(-6, 7))  # ×0.125 … ×8, steps of √2
CROP = 256  # network pixels per side at every candidate factor: the estimate's cost is bounded
# A pass shows the network at least this many D0 across: in a view barely larger than D0 no
# object of that size lies whole inside it, and clusters merged at a coarse factor pass for
# nuclei (train image 6fe2df6d at ×0.5, 260 × 348 px, nuclei 13.6 px: at ×0.125 a view 32 px
# high showed 3 clusters, read as 137 px; with 3 D0 its nuclei are read, 12.8 px). Of 440
# recorded estimates (val and train, ×0.33-×5) no other changed.
MIN_VIEW = 3
MIN_OBJECTS = 3  # fewer whole objects in a crop are read only where more give no scale
STEADY = 1.25  # ...and only if their size in the image holds over 3 factors (see _crossing)
SUSTAIN = 0.8  # the factor after a crossing must keep objects at least this × D0 (no merge)
CLOSEST = 0.7  # without a crossing, objects must come this close to D0 to tell anything
GROWTH = 1.15  # ...and have grown on the network's grid by this from a coarser factor
JUMP = 3  # objects multiplying by more than this from one factor to the next are specks...
SPECK_SLOPE = -0.5  # ...if their size in the image then falls at least like f^SPECK_SLOPE
# The objects' size in a pass is read from the 75th percentile of their equivalent diameters,
# divided by that percentile's ratio to the median in labels (1.125: median over the 100
# dsb2018_fluo train images; 10-90 % of images 1.06-1.23), so it estimates the median nucleus.
# The median itself is pulled down by small pieces: a crescent of cytoplasm beside a nucleus or
# a textured nucleus cut in two count as much as a whole nucleus, and on the demo time-lapse
# (nuclei ~36 px) it read 11-24 px on 5 of 10 frames where the percentile reads 31-35 px.
SIZE_PERCENTILE = 75
PERCENTILE_OVER_MEDIAN = 1.125
# Nuclei under half the model's diameter are seen by the passes through an upscaling of x2 or
# more (as prediction then sees them, with the low-magnification network), whose interpolation
# of the coarse pixel grid widens their segmented outlines by about a constant number of the
# image's pixels. Measured on 50 dsb2018_fluo *train* images shrunk x0.33 / x0.5 / x1: nuclei
# under 6 px read 0.66 px too wide, 6-8 px 0.83 (median), i.e. 10-25 % of their size; 13-17 px,
# which the passes do not upscale that much, -0.07. The estimate subtracts it there: on those
# train images at x0.33 the median estimate / labels' diameter 1.11 -> 1.01 and the share within
# ±15 % 60 -> 86 %; nuclei of D0 / 2 px and more are not touched. (Subtracting half a pixel of
# the coarser grid at every scale, tried before, cost 0.010 F1 at x1, where most images score
# better with the estimate a few per cent above the labels' median.)
UPSCALING_WIDENING = 0.7  # px of the image


@dataclass(frozen=True)
class DiameterEstimate:
    """An estimated nucleus diameter and the first-pass measurements behind it."""

    diameter: float | None  # px; None when no plane showed objects at any factor
    per_plane: tuple[float | None, ...]  # estimate of each plane looked at
    passes: tuple[tuple[tuple[float, float, int], ...], ...]  # per plane: (factor, D px, n)


def _crop_box(preview: np.ndarray, step: int, size: tuple[int, int], shape) -> Box:
    """The window of ``size`` original px with the most signal (clipped intensity) in it."""
    py, px = max(1, -(-size[0] // step)), max(1, -(-size[1] // step))
    py, px = min(py, preview.shape[0]), min(px, preview.shape[1])
    integral = np.pad(np.clip(preview, 0, 1).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[py:, px:] - integral[:-py, px:] - integral[py:, :-px] + integral[:-py, :-px]
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    y0 = min(iy * step, shape[0] - size[0])
    x0 = min(ix * step, shape[1] - size[1])
    return y0, y0 + size[0], x0, x0 + size[1]


def _whole_object_diameters(labels: np.ndarray, box: Box, shape) -> np.ndarray:
    """Equivalent diameters (px) of the objects that no crop edge inside the image cuts."""
    areas = np.bincount(labels.ravel())
    cut = []
    if box[0] > 0:
        cut.append(labels[0])
    if box[1] < shape[0]:
        cut.append(labels[-1])
    if box[2] > 0:
        cut.append(labels[:, 0])
    if box[3] < shape[1]:
        cut.append(labels[:, -1])
    keep = areas > 0
    keep[0] = False
    for edge in cut:
        keep[np.unique(edge)] = False
    return 2.0 * np.sqrt(areas[keep] / np.pi)


def typical_diameter(diameters: np.ndarray) -> float:
    """The median nucleus diameter of a pass's objects, robust to small pieces (see above);
    of fewer than ``MIN_OBJECTS`` objects, their median (a percentile of one or two objects
    says nothing about a population)."""
    if diameters.size < MIN_OBJECTS:
        return float(np.median(diameters))
    return float(np.percentile(diameters, SIZE_PERCENTILE)) / PERCENTILE_OVER_MEDIAN


def _plane_passes(predictor, plane, factors, segment) -> list[tuple[float, float, int]]:
    """(factor, typical object diameter in original px, objects) at each factor, coarse first.

    Stops one factor after objects reach the model's size (the crossing and its check).
    """
    shape = tuple(int(n) for n in plane.shape[-2:])
    step = max(1, -(-max(shape) // 512))
    preview = np.asarray(plane[:, ::step, ::step], dtype=np.float32).max(axis=0)
    d0 = predictor.object_diameter
    passes: list[tuple[float, float, int]] = []
    crossed = False
    for factor in factors:
        size = tuple(min(n, int(math.ceil(CROP / factor))) for n in shape)
        small = scaled_shape(size, factor)
        if min(small) < max(16, MIN_VIEW * d0):  # too few network pixels to show whole nuclei
            continue
        box = _crop_box(preview, step, size, shape)
        crop = np.asarray(plane[:, box[0] : box[1], box[2] : box[3]], dtype=np.float32)
        probs = predictor.predict_plane(resample(crop, size, small), tile=max(small), halo=0)
        diameters = _whole_object_diameters(segment(probs), box, shape)
        if diameters.size == 0:
            passes.append((factor, float("nan"), 0))
            continue
        passes.append((factor, typical_diameter(diameters) / factor, int(diameters.size)))
        if diameters.size < MIN_OBJECTS:  # read only where nothing better is found
            continue
        if crossed:
            break
        crossed = factor * passes[-1][1] >= d0
    return passes


def _before_specks(passes):
    """The passes before objects multiply ×``JUMP`` from one upscaling factor to the next and
    turn out to be specks.

    The crop holds a fixed number of network pixels, so a finer factor shows fewer original
    pixels: whole nuclei can only become fewer, or split in a few pieces. Many times more
    objects at once while upscaling is either noise resolved into specks of the model's size,
    and every finer factor shows more of it, or nuclei far smaller than the model's that the
    previous factor merged into clusters (below ×1 that is the usual case). The two part at the
    finer factors: nuclei keep their size in the image, specks keep theirs on the network's grid
    (:func:`_keep_their_size`).
    """
    for k in range(1, len(passes)):
        if passes[k][0] > 1 and _multiplied(passes, k) and not _keep_their_size(passes[k:]):
            return passes[:k]
    return passes


def _multiplied(passes, k: int) -> bool:
    """True where pass ``k`` shows more than ``JUMP`` × the objects of the pass before it
    (which showed at least ``MIN_OBJECTS``)."""
    before, now = passes[k - 1][2], passes[k][2]
    return before >= MIN_OBJECTS and now > JUMP * before


def _steady(sizes) -> bool:
    """True where object sizes (in the image) hold within ``STEADY`` of each other."""
    return max(sizes) <= STEADY * min(sizes)


def _interpolated(fa: float, sa: float, f: float, s: float, d0: float) -> float:
    """Diameter where ``s`` reaches 1 between (fa, sa < 1) and (f, s >= 1), in log-log."""
    t = math.log(1 / sa) / math.log(s / sa)
    return d0 / math.exp(math.log(fa) + t * (math.log(f) - math.log(fa)))


def _keep_their_size(passes) -> bool:
    """True where the objects of these passes keep their size in the image as the factor
    grows: the slope of log D(f) against log f (least squares, over at least 3 passes with
    objects) is above ``SPECK_SLOPE``. Nuclei: about 0; specks of a fixed network size: -1."""
    seen = [(f, d) for f, d, n in passes if n >= MIN_OBJECTS and np.isfinite(d)]
    if len(seen) < 3:
        return False
    log_f, log_d = np.log(np.array(seen)).T
    slope = np.polyfit(log_f, log_d, 1)[0]
    return bool(slope > SPECK_SLOPE)


def _crossing(passes, d0: float) -> float | None:
    """Diameter where objects first reach D0 on the network's grid, sustained at the next factor.

    With ``s(f) = f · D(f) / D0`` (objects' size on the network's grid), ``s`` grows with ``f``
    while the network resolves the nuclei (``D(f)`` ≈ the true diameter), and stays near 1 above
    the right factor, where nuclei too large for the model fall apart into model-sized pieces.
    The right factor is where ``s`` first reaches 1, interpolated in log-log between the two
    factors around it. A crossing counts only if the next factor looked at confirms it (``s``
    stays above ``SUSTAIN`` with at least ``MIN_OBJECTS`` objects); otherwise it was a cluster
    merged at too coarse a scale, or specks, and is skipped. The last factor has nothing after it
    and never counts: noise upscaled ×8 shows "objects" of the model's size in any image.
    Where objects never reach D0, ``D(f)`` is read where ``s`` comes closest to 1, if that is at
    least ``CLOSEST`` and ``s`` grew into it (by ``GROWTH`` from a coarser factor):
    resolved nuclei grow on the network's grid as the factor grows, while noise and texture look
    model-sized at every factor.

    Passes are read with at least ``MIN_OBJECTS`` whole objects first. Where those give no
    crossing, passes of one or two objects are read the same way before the closest approach:
    a sparse field (one large nucleus, its background noise upscaled into blobs) shows its
    nucleus whole at coarse factors and only blobs at fine ones, which never cross. There the
    object must also keep its size in the image over the factors leading to the crossing (a
    bright background ramp is one "object" whose size changes several-fold between them).
    Such a nucleus is read first, ahead of many objects, where those appeared only past a ×3
    multiplication (:func:`_sparse_nucleus`: the noise of a sparse field).
    """
    passes = _before_specks(passes)
    sparse = _sparse_nucleus(passes, d0)
    if sparse is not None:
        return sparse
    many = _readable(passes, d0, MIN_OBJECTS)
    found = _first_crossing(many, d0)
    if found is None:  # one or two whole objects (a sparse field) where nothing else crosses
        found = _first_crossing(_readable(passes, d0, 1), d0, steady=True)
    return found if found is not None else _closest(many)


def _sparse_nucleus(passes, d0: float) -> float | None:
    """Diameter of a sparse field's nucleus, where background noise would otherwise set it.

    Past a ×``JUMP`` multiplication of objects whose sizes then hold (which
    :func:`_before_specks` keeps as tiny nuclei resolved from clusters), a field with one or two
    large nuclei on a noisy background shows its upscaled noise as "nuclei" of a few pixels
    that cross D0 at a fine factor (val image 93c5638e at ×3: estimate 5.5 px, labels 33.5 px,
    2640 spurious objects). Such a field first shows its nucleus whole at the coarse factors
    before the multiplication: one object keeping its size while ``s`` rises through 1 (see
    :func:`_steady_rise`); where there is one, it is the scale. Its crossing is not confirmed
    by the next factor, where the nucleus, too large for the network, falls apart: the telling
    failure that marks the factor as too fine.
    """
    for k in range(1, len(passes)):
        if _multiplied(passes, k) and _keep_their_size(passes[k:]):
            return _steady_rise(passes[:k], d0)
    return None


def _steady_rise(passes, d0: float) -> float | None:
    """Diameter where objects' ``s`` first rises through 1 from below, interpolated in log-log,
    if their size in the image held (within ``STEADY``) over that pass and the two before it."""
    seen = [(f, d, f * d / d0) for f, d, n in passes if n >= 1 and np.isfinite(d)]
    for i in range(2, len(seen)):
        (fa, _, sa), (f, _, s) = seen[i - 1], seen[i]
        if s < 1:
            continue
        if sa >= 1 or not _steady([v[1] for v in seen[i - 2 : i + 1]]):
            return None
        return _interpolated(fa, sa, f, s, d0)
    return None


def _readable(passes, d0: float, min_objects: int) -> list[tuple[float, float, float, bool]]:
    """(f, D, s, confirmed by the next factor) of the passes with ``min_objects`` or more."""
    valid = []
    for k, (f, d, n) in enumerate(passes):
        if n < min_objects or not np.isfinite(d):
            continue
        s = f * d / d0
        after = passes[k + 1] if k + 1 < len(passes) else None
        confirmed = (
            after is not None
            and after[2] >= min_objects
            and bool(np.isfinite(after[1]))
            and after[0] * after[1] / d0 >= SUSTAIN * min(1.0, s)
        )
        valid.append((f, d, s, confirmed))
    return valid


def _first_crossing(valid, d0: float, steady: bool = False) -> float | None:
    """Diameter where ``s`` first reaches 1, confirmed, interpolated in log-log.

    ``steady``: only if the objects kept their size in the image (within ``STEADY``) over the
    crossing pass and the two before it, as a nucleus does; a smooth background ramp seen as
    one object grows or shrinks several-fold from one factor to the next. Nuclei large enough
    to cross at the second factor looked at (over ~100 px) have one pass before it: there the
    pass after it counts instead (train image 45c3bdef at ×2, nuclei 77 px: no estimate, so
    no rescaling, before; 110 px now).
    """
    for i, (f, d, s, confirmed) in enumerate(valid):
        if s < 1 or not confirmed:
            continue
        if steady:  # a nucleus crossing at the second factor: the one before and after it
            window = valid[i - 2 : i + 1] if i >= 2 else valid[max(0, i - 1) : i + 2]
            if len(window) < 3 or not _steady([v[1] for v in window]):
                return None
        if i == 0:
            return d
        fa, _, sa, _ = valid[i - 1]
        if sa >= 1:  # the factor before crossed too, unconfirmed: nothing to interpolate from
            return d
        return _interpolated(fa, sa, f, s, d0)
    return None


def _closest(valid) -> float | None:
    """Objects never reach D0 (e.g. textured nuclei the model trims at every factor): the
    factor where they come closest to it is the one where the model resolves them best."""
    grown = [
        (s, d)
        for i, (_, d, s, confirmed) in enumerate(valid)
        if confirmed and i > 0 and s >= GROWTH * min(v[2] for v in valid[:i])
    ]
    best = max(grown, default=None)
    return best[1] if best is not None and best[0] >= CLOSEST else None


def estimate_diameter(predictor, planes, *, factors=CANDIDATE_FACTORS) -> DiameterEstimate:
    """Estimate the nucleus diameter (px) of images from quick passes of the model itself
    (or of the scale model its checkpoint carries, ``Predictor.scale_predictor``).

    Method: each plane is looked at through crops of ``CROP``² network pixels at candidate
    factors ×0.125 … ×8 (steps of √2), coarse to fine; each crop (placed where the plane has the
    most signal) is resized by the factor, predicted and segmented, and the typical equivalent
    diameter of its whole objects (:func:`typical_diameter`), measured in the plane's own
    pixels, is ``D(f)``. Measuring in original pixels is what defeats the telling failure of
    naive estimators: at too large a factor nuclei break into model-sized fragments, so a first
    pass "finds" the model's size wherever it looks; here those fragments shrink ``D(f)``
    instead, and the answer is taken where objects *first* reach the model's size ``D0`` on the
    network's grid (see :func:`_crossing`). Below ``D0 / 2`` the interpolation's widening of
    outlines, ``UPSCALING_WIDENING`` px, is subtracted. Cost: at most 13 passes of 256² pixels
    per plane, independent of the image size, and the passes stop one factor after the crossing;
    they are never augmented (one forward pass each, whatever the predictor's ``augment``).

    Args:
        predictor: a :class:`grunet.predict.Predictor`.
        planes: normalised ``(C, Y, X)`` planes (numpy, or lazy arrays sliced on demand).
        factors: candidate factors, ascending.

    Returns:
        :class:`DiameterEstimate`; its ``diameter`` is the median over planes.

    Example:
        >>> estimate_diameter(grunet.load_model(), [normalised]).diameter  # doctest: +SKIP
        38.2
    """
    from grunet.segmentation import segment_plane

    d0 = predictor.object_diameter
    predictor = getattr(predictor, "scale_predictor", predictor)  # a checkpoint's scale model
    predictor = predictor.with_augment(False)  # object sizes need one pass, not four
    options = predictor.segmentation_options

    def segment(probs):
        return segment_plane(probs, **options)

    per_plane, passes = [], []
    for plane in planes:
        found = _plane_passes(predictor, plane, factors, segment)
        passes.append(tuple(found))
        found_d = _crossing(found, predictor.object_diameter)
        if found_d is not None and found_d < d0 / LOW_MAGNIFICATION:
            found_d -= UPSCALING_WIDENING
        if found_d is not None:  # within the factors the model can be used at
            found_d = min(max(found_d, d0 / max(factors)), d0 / min(factors))
        per_plane.append(found_d)
    values = [d for d in per_plane if d is not None]
    diameter = float(np.median(values)) if values else None
    return DiameterEstimate(diameter, tuple(per_plane), tuple(passes))
