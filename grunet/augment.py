"""Training-time augmentation of (image, instance labels) patches: scale, geometry, intensity.

Geometry acts on the image and its *instance labels* together (labels by nearest neighbour), and
training targets are derived from the augmented labels afterwards, so targets always sit on the
augmented image at the scale the network sees. Intensity augmentation imitates what differs
between experiments: gamma, gain and offset (other exposure / normalisation), blur (focus), noise
(additive, and photon noise of dim exposures), uneven background (illumination, haze),
and *outliers*: a few saturated, very bright nuclei that set the top of the percentile range and
push ordinary nuclei down to ~0.1 of it (Issue 13: the network must still find the dim ones).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import ellipse


def log_uniform(rng: np.random.Generator, bounds) -> float:
    """A factor drawn uniformly on a log scale between ``bounds[0]`` and ``bounds[1]``."""
    low, high = float(bounds[0]), float(bounds[1])
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def scaled_crop(
    image: np.ndarray, labels: np.ndarray, center: tuple[int, int], size: int, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` patch of the image rescaled by ``scale``, centred on ``center``.

    The window of ``round(size / scale)`` source pixels is cut out (zeros beyond the image
    border, for the normalised image and the labels alike: no mirrored half-nuclei) and resized
    to ``size``: the image linearly (anti-aliased when shrinking), the labels by nearest.
    """
    from skimage.transform import resize

    window = max(2, int(round(size / scale)))
    h, w = image.shape
    y0, x0 = int(center[0]) - window // 2, int(center[1]) - window // 2
    img = np.zeros((window, window), np.float32)
    lab = np.zeros((window, window), labels.dtype)
    sy, sx = slice(max(y0, 0), min(y0 + window, h)), slice(max(x0, 0), min(x0 + window, w))
    dy, dx = slice(sy.start - y0, sy.stop - y0), slice(sx.start - x0, sx.stop - x0)
    img[dy, dx], lab[dy, dx] = image[sy, sx], labels[sy, sx]
    if window == size:
        return img, lab
    img = resize(img, (size, size), order=1, anti_aliasing=window > size, preserve_range=True)
    lab = resize(lab, (size, size), order=0, anti_aliasing=False, preserve_range=True)
    return img.astype(np.float32), lab.astype(labels.dtype)


def flip_rotate(
    arrays: list[np.ndarray], rng: np.random.Generator, flip: bool = True, rot90: bool = True
) -> list[np.ndarray]:
    """The same random flip and 90-degree rotation applied to every array (contiguous copies)."""
    if flip and rng.random() < 0.5:
        arrays = [a[:, ::-1] for a in arrays]
    if rot90:
        k = int(rng.integers(4))
        arrays = [np.rot90(a, k) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


def add_bright_nuclei(
    image: np.ndarray,
    labels: np.ndarray,
    count: int,
    diameter: float,
    level: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint up to ``count`` saturated nucleus-shaped ellipses (new cells) onto background.

    Each is ``diameter`` x 0.8-1.8 across, flat at a brightness drawn from ``level`` (the image
    is expected to be scaled so that ordinary nuclei are dimmer), and placed only where it keeps
    a 2-pixel gap to every existing cell, so no annotated nucleus is covered.
    """
    image, labels = image.copy(), labels.copy()
    occupied = ndi.binary_dilation(labels > 0, iterations=2)
    next_id = int(labels.max()) + 1
    for _ in range(count):
        d = diameter * rng.uniform(0.8, 1.8)
        ry, rx = d / 2 * rng.uniform(0.75, 1.0), d / 2 * rng.uniform(0.75, 1.0)
        cy, cx = rng.uniform(0, image.shape[0]), rng.uniform(0, image.shape[1])
        rr, cc = ellipse(cy, cx, ry, rx, shape=image.shape, rotation=rng.uniform(0, np.pi))
        if rr.size < 4 or occupied[rr, cc].any():
            continue
        image[rr, cc] = rng.uniform(*level)
        labels[rr, cc] = next_id
        occupied[rr, cc] = True
        next_id += 1
    return image, labels


def add_cytoplasm_glow(
    image: np.ndarray,
    labels: np.ndarray,
    diameter: float,
    level: tuple[float, float],
    rng: np.random.Generator,
    eccentric: float = 0.0,
) -> np.ndarray:
    """Dim cell bodies around the nuclei, left as background in the labels.

    Many nuclear stains also light the cytoplasm faintly (or the channel is a whole-cell
    marker with a bright nucleus). Each nucleus gets a body reaching 0.3-1.5 nucleus diameters
    beyond it, off-centre, with a wavy outline, at ``level`` × the nuclei's median brightness
    and a smooth texture. Its edge ranges from a sharp step to a ramp fading with distance:
    a flat plateau with a sharp edge is what looks most like a dim nucleus, and a model that
    has seen ordinary nuclei beside saturated ones must learn that a plateau around a bright
    nucleus is its cytoplasm.

    ``eccentric``: each body also extends up to this many nucleus diameters to a side of its
    own (cells whose nucleus sits at one end, as in most adherent cell lines): a crescent of
    cytoplasm on one side of a nucleus, not only a ring around it. 0 (the default) shifts all
    bodies alike, as before.
    """
    nuclei = labels > 0
    if not nuclei.any():
        return image
    shift = rng.uniform(-0.3, 0.3, 2) * diameter
    moved = ndi.shift(nuclei.astype(np.float32), shift, order=0) > 0.5
    if eccentric > 0:
        moved |= _moved_one_by_one(labels, eccentric * diameter, rng)
    distance = ndi.distance_transform_edt(~(nuclei | moved))
    smooth = max(1.0, diameter / 4)
    wobble = ndi.gaussian_filter(rng.standard_normal(image.shape), smooth)
    wobble /= wobble.std() + 1e-9
    mean_reach = diameter * rng.uniform(0.3, 1.5)
    reach = mean_reach * np.clip(1.0 + 0.25 * wobble, 0.5, 1.5)
    edge = max(1.0, mean_reach * log_uniform(rng, (0.05, 1.0)))  # sharp step ... ramp
    texture = ndi.gaussian_filter(rng.random(image.shape), max(1.0, diameter / 8))
    texture = 0.5 + (texture - texture.min()) / (np.ptp(texture) + 1e-9)
    # under the nuclei too (cytoplasm above and below them): no dark ring marks a nucleus' edge
    glow = np.clip((reach - distance) / edge, 0.0, 1.0) * texture
    brightness = float(np.median(image[nuclei]))
    return (image + glow * rng.uniform(*level) * brightness).astype(np.float32)


def _moved_one_by_one(labels: np.ndarray, reach: float, rng: np.random.Generator) -> np.ndarray:
    """The nuclei, each moved by its own random offset of up to ``reach`` px (clipped to the
    patch), as one mask."""
    moved = np.zeros(labels.shape, bool)
    objects = ndi.find_objects(labels)
    for label, box in enumerate(objects, start=1):
        if box is None:
            continue
        ys, xs = np.nonzero(labels[box] == label)
        angle, length = rng.uniform(0, 2 * np.pi), reach * np.sqrt(rng.random())
        ys = np.clip(ys + box[0].start + int(round(length * np.sin(angle))), 0, labels.shape[0] - 1)
        xs = np.clip(xs + box[1].start + int(round(length * np.cos(angle))), 0, labels.shape[1] - 1)
        moved[ys, xs] = True
    return moved


def add_nucleoli(
    image: np.ndarray,
    labels: np.ndarray,
    diameter: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Dark spots inside the nuclei (nucleoli, chromatin texture); labels unchanged.

    About two spots per nucleus, 0.1-0.25 nucleus diameters across, each darkening its nucleus
    to 0.3-0.8 of its brightness with soft edges, so that a textured nucleus is learned as one
    object rather than cut at its dark spots.
    """
    nuclei = labels > 0
    if not nuclei.any():
        return image
    pixels = np.flatnonzero(nuclei)
    n_nuclei = len(np.unique(labels[nuclei]))
    centres = np.zeros(image.shape, bool)
    centres.flat[rng.choice(pixels, size=min(pixels.size, rng.poisson(2 * n_nuclei) + 1))] = True
    radius = diameter * rng.uniform(0.05, 0.125)
    spots = (ndi.distance_transform_edt(~centres) <= radius).astype(np.float32)
    spots = ndi.gaussian_filter(spots, max(0.5, radius / 2)) * nuclei
    depth = rng.uniform(0.2, 0.7)
    return (image * (1.0 - depth * np.clip(spots, 0.0, 1.0))).astype(np.float32)


def add_condensed_chromatin(
    image: np.ndarray,
    labels: np.ndarray,
    diameter: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bright clumps and dim gaps inside the nuclei (condensed chromatin); labels unchanged.

    Heterochromatin, chromocentres and the condensing chromatin of prophase make a nucleus a
    patchwork of bright clumps with sharp edges on a dimmer ground. A model that has only seen
    smooth nuclei reads those inner edges as cell borders and cuts the nucleus in pieces.
    Clumps 0.1-0.35 nucleus diameters across cover 10-40 % of each nucleus at 1.5-3 × its
    brightness while the rest dims to 0.5-1 ×, so the nucleus' outline stays its only border.
    """
    nuclei = labels > 0
    if not nuclei.any():
        return image
    size = diameter * rng.uniform(0.1, 0.35)
    field = ndi.gaussian_filter(rng.standard_normal(image.shape), max(0.5, size / 2))
    cover = rng.uniform(0.1, 0.4)
    clumps = field > np.quantile(field[nuclei], 1.0 - cover)
    # a clump belongs to one nucleus: none spans the border of two touching ones, which stays
    # at the ground's level (as do the last px of every outline)
    inside = ndi.maximum_filter(labels, 3) == ndi.minimum_filter(labels, 3)
    clumps = ndi.gaussian_filter((clumps & inside).astype(np.float32), rng.uniform(0.3, 1.0))
    clumps *= inside & nuclei
    ground = rng.uniform(0.5, 1.0)
    gain = rng.uniform(1.5, 3.0)
    # the nucleus' own signal (above the background) changes, as seen: its blurred edge reaches
    # a px or two past the label, so no bright rim is left there, and no dark ring drawn
    seen = ndi.gaussian_filter(ndi.binary_dilation(nuclei, iterations=3).astype(np.float32), 1.5)
    weight = 1.0 + (ground - 1.0) * seen + (gain - ground) * clumps
    background = float(np.median(image[~nuclei])) if (~nuclei).any() else 0.0
    return (background + (image - background) * weight).astype(np.float32)


def intensity(
    image: np.ndarray,
    labels: np.ndarray,
    opts: dict,
    diameter: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Gamma, gain (with optional bright outlier nuclei), blur, offset and noise of a patch.

    ``opts`` is the training config's ``augment`` mapping; ``diameter`` is the nucleus diameter
    in patch pixels (size of the outlier nuclei). Returns the image and the labels, which gain
    the painted outlier nuclei.
    """
    img = np.asarray(image, np.float32)
    if rng.random() < opts.get("p_nucleoli", 0.0):
        img = add_nucleoli(img, labels, diameter, rng)
    if rng.random() < opts.get("p_chromatin", 0.0):
        img = add_condensed_chromatin(img, labels, diameter, rng)
    if rng.random() < opts.get("p_glow", 0.0):
        eccentric = opts.get("glow_eccentric", 0.0)
        img = add_cytoplasm_glow(img, labels, diameter, opts["glow_level"], rng, eccentric)
    if rng.random() >= opts["p_intensity"]:
        return img, labels
    img = np.clip(img, 0.0, None) ** log_uniform(rng, opts["gamma"])
    outlier = rng.random() < opts["p_outlier"]
    # outliers: the top of the range is set by something much brighter than the ordinary nuclei
    img = img * log_uniform(rng, opts["outlier_gain" if outlier else "scale"])
    signal = float(np.percentile(img, 99)) or 1.0  # the ordinary content's brightness
    if outlier:
        count = int(rng.integers(0, int(opts["outlier_nuclei"]) + 1))
        img, labels = add_bright_nuclei(img, labels, count, diameter, opts["outlier_level"], rng)
    if rng.random() < opts["p_blur"]:
        img = ndi.gaussian_filter(img, rng.uniform(*opts["blur"]))
    img = img + rng.uniform(*opts["shift"]) * min(signal, 1.0)
    if rng.random() < opts.get("p_background", 0.0):
        level = rng.uniform(0, opts["background_level"]) * min(signal, 1.0)
        img = img + smooth_background(img.shape, level, rng)
    if rng.random() < opts.get("p_shot", 0.0):
        img = shot_noise(img, signal, log_uniform(rng, opts["shot_photons"]), rng)
    if opts["noise"]:  # noise relative to the signal: a dim image is not a noisier one
        img = img + rng.normal(0.0, rng.uniform(0, opts["noise"]) * signal, img.shape)
    return img.astype(np.float32), labels


def smooth_background(shape: tuple[int, int], level: float, rng: np.random.Generator):
    """An additive background rising smoothly across the patch to ``level`` (image units):
    uneven illumination, out-of-focus haze, a glowing region of the coverslip.

    A ramp in a random direction from a start drawn between 0 and ``level`` up to ``level``,
    so patches see both a high flat background and a steep slope.
    """
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    ramp = y * np.sin(angle) + x * np.cos(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    start = rng.uniform(0, 1)
    return (level * (start + (1 - start) * ramp)).astype(np.float32)


def shot_noise(image: np.ndarray, signal: float, photons: float, rng) -> np.ndarray:
    """Photon (Poisson) noise of an image whose ``signal`` level collected ``photons``.

    Noise that grows with brightness, as a camera records a dim exposure: at 20 photons a
    nucleus varies by ±22 % from pixel to pixel and a dark background by a quarter of that. The
    image keeps its scale.
    """
    per_unit = photons / max(signal, 1e-6)
    counts = rng.poisson(np.clip(image, 0.0, None) * per_unit + 1.0)  # + 1: dark counts
    return ((counts - 1.0) / per_unit).astype(np.float32)


def low_resolution(image: np.ndarray, factor: float) -> np.ndarray:
    """The patch as a ``factor``× coarser camera records it and grunet then upscales it.

    Shrunk by ``1/factor`` and resized back with :func:`grunet.scale.resample`, the same
    antialiased linear resampling that prediction applies: nuclei imaged at low magnification
    (a few px across) reach the network at its object scale, but as blurred as that.
    """
    from grunet.scale import resample, scaled_shape

    shape = tuple(int(n) for n in image.shape)
    coarse = scaled_shape(shape, 1.0 / factor)
    small = resample(np.asarray(image, np.float32)[None], shape, coarse)
    return resample(small, coarse, shape)[0]


def overexpose(image: np.ndarray, labels: np.ndarray, share: float) -> np.ndarray:
    """The patch as an overexposed camera records it: the brightest ``share`` of its nucleus
    pixels clipped to one value, which becomes the top of the range (1.0), as the percentile
    normalisation of such an image makes it. A patch without nuclei is returned as it is."""
    nuclei = image[labels > 0]
    ceiling = float(np.quantile(nuclei, 1.0 - share)) if nuclei.size else 0.0
    if ceiling <= 0:
        return image
    return (np.minimum(image, np.float32(ceiling)) / np.float32(ceiling)).astype(np.float32)


def paint_outlier_nuclei(
    image: np.ndarray,
    labels: np.ndarray,
    count: int,
    rng: np.random.Generator,
    brightness: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A raw image with ``count`` saturated nuclei added, and the mask of those nuclei.

    The nuclei are flat at ``brightness`` times the image's 99.8th percentile, 1.3x the median
    nucleus diameter of ``labels`` across, on background only: after a percentile
    normalisation they set the top of the range and the ordinary nuclei fall to ~1/brightness
    of it. Used to measure that a model's ordinary nuclei survive outliers (Issue 13).
    """
    from grunet.preprocess import median_diameter, percentile_range

    image = np.asarray(image, np.float32)
    level = brightness * percentile_range(image, (1.0, 99.8))[1]
    diameter = 1.3 * (median_diameter(labels) or 16.0)
    painted, out = image, np.asarray(labels)
    first_new = int(out.max()) + 1
    for _ in range(50):  # retry placements until `count` nuclei fit
        missing = count - (int(out.max()) + 1 - first_new)
        if missing <= 0:
            break
        painted, out = add_bright_nuclei(painted, out, missing, diameter, (level, level), rng)
    return painted, out >= first_new
