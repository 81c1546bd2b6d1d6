"""Saturated nuclei do not set the intensity range of the ordinary ones (Issue 13, part 2)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import shared_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

import grunet
from grunet.augment import paint_outlier_nuclei
from grunet.checkpoint import load_checkpoint
from grunet.evaluate import image_counts, summarize, without_objects_on
from grunet.io import percentile_range_dask
from grunet.predict import Predictor
from grunet.preprocess import NORMALISED_CEILING, normalize, percentile_range

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(load_checkpoint(), device="cpu", compile=False)


def with_saturated_blobs(image: np.ndarray, ceiling: float) -> np.ndarray:
    """``image`` with three 20-px squares clipped at ``ceiling`` (3 % of its pixels)."""
    out = image.copy()
    for x in (10, 60, 110):
        out[90:110, x : x + 20] = ceiling
    return out


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_a_saturated_plateau_is_left_out_of_the_range_in_memory_and_streamed(dtype):
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 300.0, (200, 300)).astype(dtype)
    painted = with_saturated_blobs(image, ceiling=60000)
    rest = tuple(np.percentile(image[painted != 60000].astype(np.float32), (1.0, 99.8)))
    assert percentile_range(painted) == pytest.approx(rest, rel=1e-6)
    chunked = da.from_array(painted[None], chunks=(1, 64, 64))
    streamed = percentile_range_dask(chunked, channel_axis=0)
    assert streamed[0] == pytest.approx(rest, rel=1e-3)
    assert percentile_range(np.float32(painted))[1] < 1.01 * percentile_range(image)[1]


def test_hot_pixels_and_flat_images_keep_the_plain_percentiles():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 300.0, (200, 300)).astype(np.float32)
    image[5, 7] = image[50, 9] = 1e6  # two hot pixels: not a clipped object
    assert percentile_range(image) == pytest.approx(tuple(np.percentile(image, (1.0, 99.8))))
    binary = np.zeros((50, 50), np.uint8)
    binary[:, 25:] = 255  # half the image at the maximum: the image is a mask, not saturated
    assert percentile_range(binary) == (0.0, 255.0)


def test_an_overexposed_image_keeps_the_plain_percentiles():
    """Its brightest nuclei run into the ceiling: the plateau sits right on top of the nuclei's
    range, and leaving it out would stretch the range over dim rims and background."""
    rng = np.random.default_rng(2)
    image = rng.gamma(2.0, 300.0, (200, 300)).astype(np.float32)
    clipped = np.minimum(image, np.percentile(image, 99.0))  # the brightest 1 % at one value
    assert percentile_range(clipped) == pytest.approx(tuple(np.percentile(clipped, (1.0, 99.8))))
    chunked = da.from_array(clipped[None], chunks=(1, 64, 64))
    assert percentile_range_dask(chunked, channel_axis=0)[0] == pytest.approx(
        percentile_range(clipped), rel=1e-3
    )


def test_normalised_intensities_are_capped():
    out = normalize(np.array([0.0, 50.0, 100.0, 1000.0]), 0.0, 100.0)
    assert out.tolist() == [0.0, 0.5, 1.0, NORMALISED_CEILING]


def test_saturated_nuclei_leave_the_other_nuclei_of_a_real_frame_as_they_were(
    predictor, nuclei_timelapse
):
    """Demo frame 14 with 3 nuclei clipped at 10x its 99.8th percentile painted on background:
    the ordinary nuclei come out as on the clean frame (before the plateau was left out of the
    range, they fell to a tenth of it and most were lost: F1 about 0.1).

    Not all of them: the demo's ambiguous pieces (a cytoplasm crescent, a textured nucleus cut
    in two) flip with any small change of the input. Agreement on frames 0 / 5 / 14 / 29 was
    0.98 / 0.92 / 0.98 / 0.87 with stage 5 and is 0.98 / 0.88 / 0.875 / 0.875 with stage 6.
    The val benchmark (issue 13's target) is the next test."""
    frame = nuclei_timelapse[14].astype(np.float32)
    clean = grunet.segment(frame, predictor, diameter=35)
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label
    from skimage.morphology import remove_small_objects

    smooth = gaussian(frame, 1)
    nuclei = label(smooth > threshold_otsu(smooth))  # blobs go beside them, not on them
    nuclei = remove_small_objects(nuclei, max_size=100)
    painted, blobs = paint_outlier_nuclei(frame, nuclei, 3, np.random.default_rng(2))
    assert blobs.sum() > 3 * 400
    found = grunet.segment(painted, predictor, diameter=35)
    agreement = summarize(image_counts(clean, without_objects_on(found, blobs)))
    assert agreement["f1_50"] >= 0.85, agreement
    assert all(np.any(found[blob] > 0) for blob in _components(blobs)), "blobs not found"


def _components(mask: np.ndarray) -> list[np.ndarray]:
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask)
    return [labels == i for i in range(1, n + 1)]


def test_val_f1_with_three_saturated_nuclei_per_image_drops_at_most_001(predictor):
    """Issue 13's outlier target on the 20 val images at the labels' diameter: 3 saturated
    nuclei painted on the background of each, only the ordinary nuclei scored. Measured:
    0.928 clean, 0.930 painted (0.909 before saturated plateaus left the range)."""
    from grunet.preprocess import median_diameter

    root = shared_dataset("dsb2018_fluo")
    manifest = pd.read_csv(root / "manifest.csv")
    clean, painted = [], []
    for n, image_id in enumerate(manifest[manifest.split == "val"].id):
        image = tifffile.imread(root / "images" / f"{image_id}.tif").astype(np.float32)
        truth = tifffile.imread(root / "labels" / f"{image_id}.tif")
        diameter = median_diameter(truth)
        clean.append(image_counts(truth, grunet.segment(image, predictor, diameter=diameter)))
        image, blobs = paint_outlier_nuclei(image, truth, 3, np.random.default_rng(n))
        found = grunet.segment(image, predictor, diameter=diameter)
        painted.append(image_counts(truth, without_objects_on(found, blobs)))
    drop = summarize(clean)["f1_50"] - summarize(painted)["f1_50"]
    assert drop <= 0.01, (summarize(clean)["f1_50"], summarize(painted)["f1_50"])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.uint8, np.uint16]),
    st.integers(0, 400),  # pixels clipped to the plateau (0: none; up to ~1/3 of the image)
    st.sampled_from([2, 40, 255]),  # plateau level above the rest's scale (255: saturated)
    st.integers(7, 50),  # chunk side
)
def test_streamed_ranges_equal_in_memory_ranges_with_any_plateau(seed, dtype, n_flat, level, side):
    """Integer stores: the histogram path gives exactly the in-memory range, whatever the
    plateau's size (hot pixels, clipped nuclei, half the image) and the blocks it falls in."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 30, (33, 37)).astype(dtype)
    top = int(level if dtype == np.uint8 else level * 200)
    image.ravel()[rng.choice(image.size, n_flat, replace=False)] = top
    chunked = da.from_array(image[None], chunks=(1, side, side))
    streamed = percentile_range_dask(chunked, channel_axis=0)
    assert streamed[0] == pytest.approx(percentile_range(image), abs=1e-9)
