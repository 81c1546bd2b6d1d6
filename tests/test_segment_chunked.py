"""Chunked segmentation equals whole-image segmentation: ragged masks, any blocks, real predictions.

The guarantee (design §4): segmenting in blocks gives the same cells as segmenting at once, up to
a renumbering, with ids consecutive from 1, and the per-cell table row for row the same. The masks
drawn here are deliberately ragged (U-shapes, spirals, combs, 1-px bridges, scattered pixels), so
that one seed meets a block face as several pieces joined only in another block.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import shared_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grunet.measure import measure_stack
from grunet.segmentation import SegmentOptions, instances_from_probabilities

# --------------------------------------------------------------------------- helpers


def relabelling(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """The one-to-one map from the ids of ``b`` to those of ``a`` (asserting that it exists)."""
    np.testing.assert_array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert pairs.shape[1] == np.unique(a).size == np.unique(b).size, "ids split or merged"
    return {int(y): int(x) for x, y in pairs.T}


def assert_consecutive(labels: np.ndarray, first: int = 1) -> None:
    ids = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(ids, np.arange(first, first + ids.size))


def assert_same_instances(whole: np.ndarray, chunked: np.ndarray) -> dict[int, int]:
    mapping = relabelling(whole, chunked)
    assert_consecutive(whole)
    assert_consecutive(chunked)
    return mapping


def assert_same_tables(whole, chunked, mapping, image, block) -> None:
    """The per-cell tables of both label images are equal row for row (after the renumbering)."""
    lut = np.zeros(max(mapping) + 1, np.uint32)
    lut[list(mapping)] = list(mapping.values())
    renamed = lut[chunked]
    stack = lambda a: a[None] if a.ndim == 3 else a[None, None]  # noqa: E731
    ours = measure_stack(stack(renamed), stack(image)[:, None], block=block)
    ref = measure_stack(stack(whole), stack(image)[:, None])
    key = ["t", "z", "label"]
    ours = ours.sort_values(key, ignore_index=True)
    ref = ref.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(ours, ref, check_exact=False, rtol=1e-12)


def probabilities(seed: np.ndarray, foreground: np.ndarray, rng) -> np.ndarray:
    """(3, ...) float32 probabilities with these masks (at threshold 0.5) and ragged priorities."""
    foreground = foreground | seed
    p1 = np.where(seed, rng.uniform(0.51, 1.0, seed.shape), rng.uniform(0, 0.49, seed.shape))
    p1 = np.round(p1, 2)  # ties in the interior probability exercise the fixed neighbour order
    p0 = np.where(foreground, rng.uniform(0, 0.49, seed.shape), rng.uniform(0.51, 1, seed.shape))
    p2 = np.clip(1 - p0 - p1, 0, None)
    return np.stack([p0, p1, p2]).astype(np.float32)


# --------------------------------------------------------------------------- the reported case


def test_seed_meeting_a_face_as_two_pieces_keeps_other_ids_apart():
    """Two arms of one seed cross a block face, joined only in the next block (issue 14)."""
    seed = np.zeros((64, 64), bool)
    seed[20:40, 4:8] = seed[20:40, 14:18] = True  # two arms cross face y=32 of block (0,0)
    seed[36:40, 4:18] = True  # ...and are joined only in block (1,0)
    seed[24:28, 22:26] = True  # a seed of block (0,0) numbered after the arms
    seed[10:14, 40:44] = True  # a seed of block (0,1)
    probs = np.stack([~seed, seed, np.zeros_like(seed)]).astype(np.float32)
    whole = instances_from_probabilities(probs)
    chunked = instances_from_probabilities(probs, block=32)
    assert np.unique(whole).size == 4
    assert_same_instances(whole, chunked)


# --------------------------------------------------------------------------- random ragged masks


def _paint(mask: np.ndarray, kind: str, y: int, x: int, h: int, w: int, step: int) -> None:
    """Draw one ragged shape into a 2D mask (clipped at the borders)."""
    canvas = np.zeros((h + 1, w + 1), bool)
    if kind == "rect":
        canvas[:] = True
    elif kind == "u":  # two arms joined at the bottom: meets a face as two pieces
        canvas[:, : max(1, w // 4)] = canvas[:, -max(1, w // 4) :] = True
        canvas[-max(1, h // 4) :, :] = True
    elif kind == "comb":  # a spine with teeth every `step` px
        canvas[: max(1, h // 5), :] = True
        canvas[:, ::step] = True
    elif kind == "bridge":  # two blobs joined by a 1-px line
        canvas[: h // 2 + 1, : max(1, w // 3)] = True
        canvas[h // 2 :, -max(1, w // 3) :] = True
        canvas[h // 2, :] = True
    elif kind == "spiral":  # a 1-px square spiral, arms `step` apart
        top, left, bottom, right = 0, 0, h, w
        while top <= bottom and left <= right:
            canvas[top, left : right + 1] = True
            canvas[top : bottom + 1, right] = True
            canvas[bottom, left : right + 1] = True
            canvas[top + step : bottom + 1, left] = True
            top, left, bottom, right = top + step, left + step, bottom - step, right - step
    elif kind == "dots":  # scattered single pixels
        canvas[::step, ::step] = True
    hh, ww = mask[y : y + h + 1, x : x + w + 1].shape
    mask[y : y + hh, x : x + ww] |= canvas[:hh, :ww]


KINDS = ["rect", "u", "comb", "bridge", "spiral", "dots"]


@st.composite
def ragged_case(draw, three_d: bool | None = None):
    """Random seed/foreground masks, options and a block size for one chunked-vs-whole check."""
    if three_d is None:
        three_d = draw(st.booleans())
    z = draw(st.integers(2, 7)) if three_d else 1
    y = draw(st.integers(6, 28 if three_d else 44))
    x = draw(st.integers(6, 28 if three_d else 44))
    masks = [np.zeros((z, y, x), bool), np.zeros((z, y, x), bool)]  # seed, extra foreground
    for which in (0, 0, 0, 1):
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(KINDS))
            z0 = draw(st.integers(0, z - 1))
            z1 = draw(st.integers(z0, z - 1))
            args = (
                draw(st.integers(0, y - 1)),
                draw(st.integers(0, x - 1)),
                draw(st.integers(1, y)),
                draw(st.integers(1, x)),
                draw(st.integers(2, 4)),
            )
            for plane in masks[which][z0 : z1 + 1]:
                _paint(plane, kind, *args)
    options = SegmentOptions(
        min_seed_size=draw(st.integers(0, 6)),
        grow_radius=draw(st.integers(0, 5)),
        max_hole_size=draw(st.sampled_from([0, 1, 4, 12])),
        min_size=draw(st.sampled_from([0, 0, 3, 10])),
        anisotropy=draw(st.sampled_from([1.0, 1.0, 0.5, 2.18, 3.0])),  # z steps in 3D growth
    )

    def side(n):  # non-divisors, 1-px-thin last blocks, blocks larger than the image
        return st.one_of(st.integers(2, n + 2), st.just(max(n - 1, 1)), st.just(max(n // 2, 1)))

    block = (draw(side(y)), draw(side(x)))
    if three_d and draw(st.booleans()):  # z slabs too (stacks too deep for all-Z blocks)
        block = (draw(side(z)), *block)
    seed_value = draw(st.integers(0, 2**32 - 1))
    return masks, options, block, seed_value, three_d


def check_ragged_case(case) -> None:
    (seed, extra), options, block, seed_value, three_d = case
    rng = np.random.default_rng(seed_value)
    probs = probabilities(seed, extra, rng)
    if not three_d:
        probs = probs[:, 0]
    whole = instances_from_probabilities(probs, options=options)
    chunked = instances_from_probabilities(probs, options=options, block=block)
    mapping = assert_same_instances(whole, chunked)
    if mapping.keys() - {0}:
        image = rng.integers(0, 1000, whole.shape).astype(np.uint16)
        assert_same_tables(whole, chunked, mapping, image, block[-2:])


FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
EXHAUSTIVE = settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FAST
@given(ragged_case(three_d=False))
def test_chunked_equals_whole_on_random_ragged_masks_2d(case):
    check_ragged_case(case)


@FAST
@given(ragged_case(three_d=True))
def test_chunked_equals_whole_on_random_ragged_masks_3d(case):
    check_ragged_case(case)


@pytest.mark.slow
@EXHAUSTIVE
@given(ragged_case())
def test_chunked_equals_whole_on_random_ragged_masks_exhaustive(case):
    check_ragged_case(case)


# --------------------------------------------------------------------------- real predictions


def predict_val(count: int | None = None):
    """The shipped model's probabilities of the DSB2018 val images (the ``count`` most crowded)."""
    import tifffile

    import grunet
    from grunet.preprocess import normalize_channels, percentile_range

    root = shared_dataset("dsb2018_fluo")
    manifest = pd.read_csv(root / "manifest.csv")
    val = manifest[manifest["split"] == "val"].sort_values("n_nuclei", ascending=False)
    assert len(val) == 20
    names = val["id"].tolist()[:count]
    model = grunet.load_model(device="cpu")
    out = []
    for name in names:
        image = tifffile.imread(root / "images" / f"{name}.tif")
        image = image[None] if image.ndim == 2 else image
        norm = normalize_channels(image, [percentile_range(c) for c in image])
        out.append(model.predict_plane(norm).astype(np.float16))
    return out, model.segmentation_options


@pytest.fixture(scope="session")
def predicted_val():
    """All 20 val images, predicted once per session."""
    return predict_val()


@pytest.fixture(scope="session")
def predicted_val_crowded():
    """The 6 most crowded val images (the default run's share of the sweep)."""
    return predict_val(6)


def mosaic(probs: list[np.ndarray], columns: int) -> np.ndarray:
    """The val predictions side by side (a few px of background between), as one plane."""
    gap = 3
    rows = [probs[i : i + columns] for i in range(0, len(probs), columns)]
    height = [max(p.shape[1] for p in row) for row in rows]
    width = max(sum(p.shape[2] + gap for p in row) for row in rows)
    out = np.zeros((3, sum(height) + gap * len(rows), width), np.float16)
    out[0] = 1
    y = 0
    for row, h in zip(rows, height):
        x = 0
        for p in row:
            out[:, y : y + p.shape[1], x : x + p.shape[2]] = p
            x += p.shape[2] + gap
        y += h + gap
    return out


def check_real(predicted, block: int, tables: bool) -> None:
    probs, opts = predicted
    options = SegmentOptions(**opts)
    plane = mosaic(probs, columns=3)
    whole = instances_from_probabilities(plane, options=options)
    assert np.unique(whole).size > 300
    chunked = instances_from_probabilities(plane, options=options, block=block)
    mapping = assert_same_instances(whole, chunked)
    if tables:
        image = (plane[1] * 1000).astype(np.uint16)
        assert_same_tables(whole, chunked, mapping, image, block)


@pytest.mark.shared_data
@pytest.mark.parametrize("block", [48, 100])
def test_chunked_equals_whole_on_predicted_val_probabilities(predicted_val_crowded, block):
    check_real(predicted_val_crowded, block, tables=False)  # tables: the random cases and the sweep


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("block", [48, 64, 100, 200, 256, 300, 512])
def test_chunked_equals_whole_on_predicted_val_probabilities_all_blocks(predicted_val, block):
    check_real(predicted_val, block, tables=True)
