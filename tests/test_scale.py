"""Object scale: diameters given or estimated reach prediction, outputs stay on the image's grid."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from conftest import shared_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

import grunet
from grunet.checkpoint import SHIPPED_MODEL, load_checkpoint
from grunet.evaluate import evaluate_labels
from grunet.predict import Predictor, plan_scaled_blocks, predict_store, scaled_block_size
from grunet.preprocess import median_diameter, normalize_channels
from grunet.scale import (
    estimate_diameter,
    resample,
    resized_annotated,
    resolve_scale,
    scaled_shape,
    support,
)
from grunet.segmentation import SegmentOptions, segment_plane

pytestmark = [
    pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="needs the shipped model"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(load_checkpoint(), device="cpu", compile=False)


def val_pair(name: str, dataset: str = "dsb2018_fluo", split: str = "val"):
    root = shared_dataset(dataset)
    manifest = pd.read_csv(root / "manifest.csv")
    (image_id,) = [i for i in manifest[manifest.split == split].id if i.startswith(name)]
    return (
        tifffile.imread(root / "images" / f"{image_id}.tif"),
        tifffile.imread(root / "labels" / f"{image_id}.tif"),
    )


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("factor", [0.3, 0.5, 2.0, 3.7])
def test_resized_crop_equals_the_crop_of_the_resized_plane(factor):
    rng = np.random.default_rng(0)
    plane = rng.random((2, 97, 131)).astype(np.float32)
    out_shape = scaled_shape(plane.shape[1:], factor)
    whole = resample(plane, plane.shape[1:], out_shape)
    box = (5, out_shape[0] - 7, 11, out_shape[1] // 2)
    y0, y1, x0, x1 = support(plane.shape[1:], out_shape, box)
    crop = resample(plane[:, y0:y1, x0:x1], plane.shape[1:], out_shape, box, origin=(y0, x0))
    np.testing.assert_allclose(crop, whole[:, box[0] : box[1], box[2] : box[3]], atol=1e-6)
    # a constant stays constant (weights sum to one, also at the borders)
    np.testing.assert_allclose(resample(np.ones((1, 40, 30)), (40, 30), out_shape[:2]), 1, 1e-6)


# ------------------------------------------------------------------------- which diameter


def test_diameter_in_px_or_um_gives_the_factor():
    assert resolve_scale(19.2, diameter=38.4).factor == pytest.approx(0.5)
    scale = resolve_scale(19.2, diameter_um=12.0, pixel_size_um=0.325)
    assert scale.diameter == pytest.approx(12.0 / 0.325)
    assert scale.source == "diameter_um"
    assert resolve_scale(19.2).factor == 1.0  # nothing given, no estimator: the image as it is


def test_shipped_model_knows_its_object_diameter(predictor):
    """D0 is the diameter its training images were rescaled to (the first model, trained at
    native scale: the median diameter of its training labels, 19.18 px)."""
    data = predictor.metadata["config"]["data"]
    expected = data["object_diameter"] if data.get("rescale") else 19.18
    assert predictor.object_diameter == pytest.approx(expected)


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_estimated_diameter_of_large_nuclei_is_within_15_percent_at_every_scale(predictor, factor):
    """Val image 4948e3df (48 px nuclei): at ×2 they are 96 px, 5× the model's 19 px.

    This is the telling failure of a naive estimator: at native scale the model cuts such nuclei
    into model-sized fragments, so "the median size of what the model finds" says "already right".
    """
    image, labels = resized_annotated(*val_pair("4948e3df"), factor)
    estimate = estimate_diameter(predictor, [normalize_channels(image[None])])
    truth = median_diameter(labels)
    assert estimate.diameter == pytest.approx(truth, rel=0.15), (estimate, truth)


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_estimated_diameter_is_within_15_percent_on_the_val_images(predictor, factor):
    """All 20 dsb2018_fluo val images resized ×0.5, ×1, ×2 against their labels' diameter.

    Measured with the shipped model (median ratio estimate/truth; share within ±15 %):
    ×0.5 1.06, 65 % (1.09, 60 % before ``UPSCALING_WIDENING``); ×1 1.05, 75 %; ×2 1.06, 70 %
    (with stage 2's network as the estimator, before its fine-tune for photon noise and uneven
    background: ×0.5 1.07, 65 %, the one image of 131 nuclei of 6.4 px read 1.04 → 1.20; that
    fine-tune lifts F1 at the automatic diameter
    by 0.12 on val with photon noise and 0.05 under a background ramp, README: Acquisition
    robustness). Misses are the smallest nuclei (4-5 px at ×0.5: the model's objects are ~1 px
    wider than the labels), an image with 2-3 nuclei and ones with nuclei of mixed sizes.
    Sizes read from the median of a pass's objects (before
    ``typical_diameter``) had 70 / 85 / 85 % within but a lower F1 at the estimated diameter
    (×0.5 0.902 vs 0.907, ×1 0.914 vs 0.920, ×2 0.907 vs 0.921; benchmarks/quality_scale.py),
    and were 1.5-3× too small on textured nuclei (see the demo test below).
    """
    root = shared_dataset("dsb2018_fluo")
    manifest = pd.read_csv(root / "manifest.csv")
    ratios = []
    for image_id in manifest[manifest.split == "val"].id:
        image, labels = resized_annotated(
            tifffile.imread(root / "images" / f"{image_id}.tif"),
            tifffile.imread(root / "labels" / f"{image_id}.tif"),
            factor,
        )
        found = estimate_diameter(predictor, [normalize_channels(image[None])]).diameter
        ratios.append(np.nan if found is None else found / median_diameter(labels))
    ratios = np.array(ratios)
    assert abs(np.nanmedian(ratios) - 1) <= 0.15, ratios
    assert np.mean(np.abs(ratios - 1) <= 0.15) >= 0.6, ratios


def test_estimate_of_nuclei_a_few_px_across_is_not_read_wide(predictor):
    """The 20 val images shrunk ×0.33 (nuclei 3-16 px): the passes see most of them upscaled ×2
    or more, whose interpolation widens outlines by ~0.7 px (``UPSCALING_WIDENING``, measured
    on train images). Median estimate / labels' diameter 1.03, 75 % within ±15 % when measured;
    without the correction 1.11 and 55 %, the estimate pushing these nuclei under the model's
    size (F1@0.5 at the automatic diameter 0.877 -> 0.880, ×0.5 0.906 -> 0.909)."""
    root = shared_dataset("dsb2018_fluo")
    manifest = pd.read_csv(root / "manifest.csv")
    ratios = []
    for image_id in sorted(manifest[manifest.split == "val"].id):
        image, labels = resized_annotated(
            tifffile.imread(root / "images" / f"{image_id}.tif"),
            tifffile.imread(root / "labels" / f"{image_id}.tif"),
            0.33,
        )
        found = estimate_diameter(predictor, [normalize_channels(image[None])]).diameter
        ratios.append(np.nan if found is None else found / median_diameter(labels))
    ratios = np.array(ratios)
    assert abs(np.nanmedian(ratios) - 1) <= 0.05, ratios
    assert np.mean(np.abs(ratios - 1) <= 0.15) >= 0.7, ratios


def otsu_nucleus_diameter(frame: np.ndarray) -> float:
    """Median equivalent diameter of the bright, well separated nuclei of a demo frame, found
    without the model: Otsu threshold of the lightly smoothed frame, holes (nucleoli) filled,
    objects over 100 px."""
    from scipy.ndimage import binary_fill_holes
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label

    smooth = gaussian(frame.astype(np.float32), 1)
    areas = np.bincount(label(binary_fill_holes(smooth > threshold_otsu(smooth))).ravel())[1:]
    return float(np.median(2 * np.sqrt(areas[areas > 100] / np.pi)))


@pytest.mark.parametrize("t", [0, 14, 29])
def test_estimated_diameter_of_textured_nuclei_is_within_15_percent(predictor, nuclei_timelapse, t):
    """Demo time-lapse frames: nuclei of ~36 px with nucleoli, beside dim cytoplasm.

    The model cuts a crescent of cytoplasm or a piece of a textured nucleus off some nuclei;
    read from the median of the objects, those pieces made the estimate 12 px on frame 0
    (14-31 px on 5 of 10 frames). Measured now: frames 0 / 14 / 29 → 31.1 / 31.1 / 33.7 px
    against 33.6 / 36.1 / 34.3 px from Otsu.
    """
    frame = nuclei_timelapse[t]
    found = estimate_diameter(predictor, [normalize_channels(frame[None])]).diameter
    assert found == pytest.approx(otsu_nucleus_diameter(frame), rel=0.15)


# ---------------------------------------------------------------- prediction at a scale


def write_store(path, plane: np.ndarray):
    from grunet.io import ImageStack, write_image

    stack = ImageStack(plane[None, None, None], pixel_sizes={"y": 0.5, "x": 0.5})
    return write_image(path, stack, chunks=96)


@pytest.fixture(scope="module")
def frame_store(tmp_path_factory, nuclei_timelapse):
    """A real 256² crop of a time-lapse frame (nuclei ~35 px) with a 0.5 µm pixel size."""
    return write_store(
        tmp_path_factory.mktemp("scale") / "frame.ome.zarr", nuclei_timelapse[5, 100:356, 60:316]
    )


@pytest.fixture(scope="module")
def small_nuclei_store(tmp_path_factory, nuclei_timelapse):
    """The same frame shrunk ×0.5 (nuclei ~17 px), 256² px."""
    frame = nuclei_timelapse[5, :512, :512].astype(np.float32)
    small = resample(frame[None], frame.shape, (256, 256))[0]
    return write_store(tmp_path_factory.mktemp("scale") / "small.ome.zarr", small)


def test_crossing_where_objects_vanish_at_the_next_factor_is_not_taken():
    """Passes recorded on the demo frame tiled to 2048²: at ×2.83 three specks reach D0 and at
    ×4 they are gone; that is not the nuclei's scale (the frame's nuclei are ~18-28 px)."""
    from grunet.scale import _crossing

    passes = [(0.125, 61.2, 57), (0.177, 57.8, 80), (0.25, 53.0, 67), (0.354, 37.9, 55),
              (0.5, 27.2, 26), (0.707, 20.6, 32), (1.0, 15.9, 13), (1.414, 8.0, 18),
              (2.0, 3.1, 9), (2.828, 6.8, 3), (4.0, float("nan"), 1)]  # fmt: skip
    assert 15 <= _crossing(passes, 19.18) <= 28
    # the same crossing at the last factor looked at: nothing confirms it, so it does not count
    assert 15 <= _crossing(passes[:-1], 19.18) <= 28


def test_specks_of_upscaled_noise_are_not_taken_for_nuclei():
    """Passes recorded on val image 93c5638e (one nucleus of 22 px, noisy background) resized
    ×2: from ×1.41 on, upscaled noise shows ever more specks of 3-8 px, and at ×5.66 one of
    them reaches D0. The specks never count (they do not cross, and a jump ×3 in their number
    ends the passes read); the one nucleus, seen whole and keeping its size from ×0.25 to ×1
    (within ``STEADY``), crosses D0 at ×0.6 and gives the estimate. Without the nucleus: no
    estimate (the image is used as it is), not a ×8 upscaling (64× the work, specks counted as
    cells)."""
    from grunet.scale import _crossing

    nan = float("nan")
    specks = [(1.414, 7.8, 8), (2.0, 5.2, 33), (2.828, 4.2, 39), (4.0, 3.3, 14),
              (5.657, 27.7, 1), (8.0, nan, 0)]  # fmt: skip
    nucleus = [(0.25, 35.5, 1), (0.354, 32.1, 1), (0.5, 30.1, 1), (0.707, 29.6, 1),
               (1.0, 28.7, 1)]  # fmt: skip
    assert _crossing(nucleus + specks, 17.0) == pytest.approx(29.8, rel=0.05)
    assert _crossing([(f, nan, 0) for f, _, _ in nucleus] + specks, 17.0) is None
    # one "object" that changes size several-fold between factors is no nucleus: passes of val
    # image 20468e87 (nuclei of 8 px) under a background ramp of half the nuclei's brightness,
    # whose bright corner is one object at ×0.125-×0.25 (read as 124 px without this check)
    ramp = [(0.125, 115.9, 2), (0.177, 130.0, 1), (0.25, 162.9, 1), (0.354, 37.1, 2),
            (0.5, 14.8, 7), (0.707, 11.1, 11), (1.0, 10.5, 16), (1.414, 7.8, 4),
            (2.0, nan, 0)]  # fmt: skip
    assert _crossing(ramp, 19.18) is None
    # resolved nuclei instead grow on the network's grid and are read where they reach D0
    nuclei = [(0.707, nan, 1), (1.0, 7.7, 6), (1.414, 6.7, 13), (2.0, 6.6, 15), (2.828, 6.2, 9),
              (4.0, 6.2, 9)]  # fmt: skip
    assert _crossing(nuclei, 17.0) == pytest.approx(6.2, rel=0.05)


@pytest.mark.parametrize("factor", [3.0, 5.0])
def test_a_field_of_one_large_nucleus_is_not_cut_into_specks(predictor, factor):
    """Val image 93c5638e resized ×5: one nucleus of 56 px in a 1280² field whose background
    noise, upscaled, looks like small blobs. Fewer than three whole objects per pass used to
    say nothing, so the estimate took the blobs (10 px) and segmented 6,775 of them (F1@0.5 of
    the 20 val images at ×5: 0.221; at ×0.33 the same image's one 4 px nucleus was missed).
    Where passes of many objects find no scale, the one nucleus seen whole at coarse factors
    gives it: one object, the nucleus (×5 F1@0.5 0.920, benchmarks/quality_scale.py). At ×3
    the blobs did cross D0 on an AVX512-BF16 host (see the next test): 2,640 objects."""
    image, labels = resized_annotated(*val_pair("93c5638e"), factor)
    found = estimate_diameter(predictor, [normalize_channels(image[None])]).diameter
    assert found == pytest.approx(median_diameter(labels), rel=0.5)
    metrics = evaluate_labels(labels, grunet.segment(image, predictor, diameter=found))
    assert metrics["n_pred"] <= 2 and metrics["f1_50"] >= 0.6, metrics


def test_a_nucleus_seen_whole_before_noise_multiplies_gives_the_scale():
    """Passes recorded on val image 93c5638e resized ×3 (labels' diameter 33.5 px) on a host
    with AVX512-BF16: the nucleus whole and keeping its size from ×0.25 to ×0.5 (45-43 px) rises
    through D0 at ×0.4, then falls apart; from ×1.41 upscaled noise multiplies (8 → 42 objects)
    into specks of 6-9 px that, with one late pass of 3 large blobs, hold their size well enough
    to pass for tiny nuclei resolved from clusters, and cross D0 at ×2.83: the estimate was
    5.5 px and 2,640 specks were segmented (val ×3 F1@0.5 0.408; 0.913 with this rule)."""
    from grunet.scale import _crossing

    nan = float("nan")
    nucleus = [(0.125, 60.6, 1), (0.177, 53.0, 1), (0.25, 45.4, 1), (0.354, 43.4, 1),
               (0.5, 43.4, 1), (0.707, 14.9, 4), (1.0, 16.8, 8)]  # fmt: skip
    specks = [(1.414, 8.7, 42), (2.0, 6.6, 49), (2.828, 6.1, 22), (4.0, 21.2, 3),
              (5.657, nan, 0), (8.0, nan, 0)]  # fmt: skip
    assert _crossing(nucleus + specks, 17.0) == pytest.approx(33.5, rel=0.3)
    # an object whose size does not hold while it crosses is no nucleus (merged clusters)
    cluster = [(f, d * (1.5 if k % 2 else 1.0), n) for k, (f, d, n) in enumerate(nucleus)]
    assert _crossing(cluster + specks, 17.0) < 10


def test_clusters_in_a_view_barely_larger_than_d0_are_not_read_as_nuclei(predictor):
    """Train image 6fe2df6d (dsb2018_fluo_extra) at ×0.5: 260 × 348 px, nuclei 13.6 px. At ×0.125
    the passes saw a view 32 px high in which 3 clusters crossed D0: read as 137 px (10× too
    large, the image would be shrunk ×0.12). Views narrower than ``MIN_VIEW`` D0 are not looked
    at, and the nuclei are read where they cross."""
    image, labels = resized_annotated(*val_pair("6fe2df6d", "dsb2018_fluo_extra", "train"), 0.5)
    found = estimate_diameter(predictor, [normalize_channels(image[None])]).diameter
    assert found == pytest.approx(median_diameter(labels), rel=0.15)


def test_nuclei_that_cross_at_the_second_factor_get_an_estimate(predictor):
    """Train image 45c3bdef at ×2: nuclei of 77 px cross D0 at ×0.177, the second factor looked
    at, with only one pass before it to show that they keep their size; the next pass shows
    too few whole nuclei to confirm the crossing as a crowd. Without an estimate the image was
    not rescaled (77 px nuclei at the model's 17 px). The pass after the crossing now stands in
    for the missing one (112, 110, 132 px: steady). A ramp that grows 116 → 130 → 163 px over
    the same passes still gives none (see above)."""
    from grunet.scale import _crossing

    nan = float("nan")
    passes = [(0.125, 112.4, 6), (0.177, 109.6, 7), (0.25, 131.9, 2), (0.354, 116.1, 3),
              (0.5, 48.4, 1), (0.707, 126.3, 1), (1.0, 125.4, 1), (1.414, 125.0, 1),
              (2.0, nan, 0)]  # fmt: skip
    assert 0.5 * 76.7 <= _crossing(passes, 17.0) <= 2 * 76.7  # 110 px
    image, labels = resized_annotated(*val_pair("45c3bdef", split="train"), 2.0)
    found = estimate_diameter(predictor, [normalize_channels(image[None])]).diameter
    truth = median_diameter(labels)
    assert found is not None and 0.5 * truth <= found <= 2 * truth  # before: none (×0.22)


def test_tiny_nuclei_that_come_apart_when_upscaled_are_not_taken_for_specks():
    """Passes recorded on val image 9bb6e39d (131 nuclei) resized ×0.33, nuclei 4.2 px: at ×1
    the model merges them into 13 clusters, at ×1.41 they come apart into 67. Unlike noise
    specks (above), they keep their size in the image at finer factors (6.5 → 4.1 px while the
    factor grows 4×), so the jump is no reason to stop; read where they reach D0. Before, the
    jump ended the passes, no estimate was found, and F1@0.5 was 0.04 instead of 0.79."""
    from grunet.scale import _crossing

    nan = float("nan")
    passes = [(0.25, nan, 0), (0.354, nan, 0), (0.5, nan, 1), (0.707, 14.07, 3), (1.0, 9.36, 13),
              (1.414, 6.50, 67), (2.0, 5.79, 99), (2.828, 5.31, 78), (4.0, 5.02, 47),
              (5.657, 4.11, 44)]  # fmt: skip
    assert _crossing(passes, 17.0) == pytest.approx(4.22, rel=0.25)


def test_estimate_of_objects_below_the_smallest_scale_is_usable(predictor):
    """Specks of 2 px lie below every candidate factor; the estimate stays within the factors
    looked at, so segmenting with it works instead of failing on an impossible diameter."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 0.01, (256, 256)).astype(np.float32)  # estimate 2.5 px: ×6.8
    ys, xs = rng.integers(4, 252, (2, 75))
    image[ys, xs] = image[ys + 1, xs] = 1.0
    found = estimate_diameter(predictor, [image[None]]).diameter
    d0 = predictor.object_diameter
    assert found is None or d0 / 8 - 1e-9 <= found <= d0 * 8
    grunet.segment(image, predictor, diameter=found or d0)  # no error


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_tiled_probabilities_match_whole_image_at_a_scale(
    predictor, frame_store, small_nuclei_store, factor, tmp_path
):
    """Tiled store prediction (256 + 128 halo) = the plane resized at once. At ×2 blocks of 96 px
    are resized one by one and cut into windows; at ×0.5 the resized plane fits one window, so it
    is one block (blocks of several chunks: the next test).

    Same bound as the seam test at scale 1 (≥ 99.9 % argmax agreement, max |Δp| ≤ 0.2). Each
    factor brings the nuclei to about the model's size (×0.5 of 35 px, ×2 of 17 px nuclei).
    The halo is on the network's grid; the scale-trained model uses more context than the
    first one (at ×2, halo 64: 99.76 %, 96: 99.90 %, 128: 99.95 %).
    """
    from grunet.io import open_store

    store = frame_store if factor < 1 else small_nuclei_store

    out = predict_store(
        store,
        tmp_path / "p.zarr",
        model=predictor,
        tile=256,
        halo=128,
        diameter=predictor.object_diameter / factor,
        progress=False,
    )
    tiled = zarr.open_group(str(out), mode="r")["probs"][0, :, 0].astype(np.float32)
    stack = open_store(store)
    plane = normalize_channels(np.asarray(stack.data[0, :, 0]), stack.normalization_ranges)
    whole = predictor.predict_plane(plane, tile=4096, factor=factor)
    assert tiled.shape == whole.shape == (3, 256, 256)
    assert (tiled.argmax(0) == whole.argmax(0)).mean() >= 0.999
    assert np.abs(tiled - whole).max() <= 0.2


def check_shrunk_layout(shape, chunks, tile: int, halo: int, factor: float) -> tuple[int, int]:
    """Blocks chunk-aligned, no window above the largest one at factor 1, and never more
    pixels computed than the one-tile blocks of before; returns (pixels, pixels before)."""

    def computed(block):
        layout = plan_scaled_blocks(shape, block, tile, halo, factor)
        windows = [w for b in layout for w in b.windows]
        return sum((w[1] - w[0]) * (w[3] - w[2]) for w in windows), windows

    block = scaled_block_size(chunks, tile, factor, halo, shape)
    pixels, windows = computed(block)
    before, _ = computed(scaled_block_size(chunks, tile, factor))
    assert block[0] % chunks[0] == 0 and block[1] % chunks[1] == 0  # chunk-aligned outputs
    assert max((w[1] - w[0]) * (w[3] - w[2]) for w in windows) <= (tile + 2 * halo) ** 2
    assert pixels <= before
    return pixels, before


@pytest.mark.parametrize("factor", [0.2, 0.33, 0.45, 0.5, 0.59, 0.75, 0.9, 0.99])
@pytest.mark.parametrize(
    "shape", [(2048, 2048), (4096, 2048), (3000, 1000), (511, 511), (300, 8000)]
)
def test_shrunk_blocks_fit_one_window_and_compute_no_more_than_chunk_blocks(factor, shape):
    """Blocks of several chunks predicted in one window each (the default tiling)."""
    pixels, before = check_shrunk_layout(shape, (1024, 1024), 1024, 32, factor)
    if (factor, shape) == (0.59, (2048, 2048)):  # the demo frame's nuclei in a 2048² plane
        assert pixels <= 0.93 * before


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6000), st.integers(1, 6000)),
    chunks=st.tuples(st.integers(16, 1500), st.integers(16, 1500)),
    tile=st.integers(1, 40).map(lambda n: 32 * n),
    halo=st.integers(0, 6).map(lambda n: 32 * n),
    factor=st.floats(0.04, 0.999),
)
def test_shrunk_layout_holds_for_drawn_planes_chunks_and_tiles(shape, chunks, tile, halo, factor):
    """The same properties for any plane, chunking, tile, halo and shrinking factor."""
    check_shrunk_layout(shape, chunks, tile, halo, factor)


def test_blocks_of_several_chunks_in_one_window_match_whole_image(
    predictor, nuclei_timelapse, tmp_path
):
    """A 768² real plane at ×0.6, 96 px chunks, tile 128 + halo 128: blocks of 2 × 2 chunks,
    one window each, of several shapes; probabilities as the plane resized at once (the bound
    of the test above)."""
    from grunet.io import open_store

    factor = 0.6
    store = write_store(
        tmp_path / "tiled.ome.zarr", np.tile(nuclei_timelapse[5], (2, 2))[:768, :768]
    )
    layout = plan_scaled_blocks((768, 768), scaled_block_size((96, 96), 128, factor, 128,
                                (768, 768)), 128, 128, factor)  # fmt: skip
    assert len(layout) > 4 and all(len(b.windows) == 1 for b in layout)
    assert all(b.out_box[1] - b.out_box[0] > 96 for b in layout[:-1])
    out = predict_store(store, tmp_path / "p.zarr", model=predictor, tile=128, halo=128,
                        diameter=predictor.object_diameter / factor, progress=False)  # fmt: skip
    tiled = zarr.open_group(str(out), mode="r")["probs"][0, :, 0].astype(np.float32)
    stack = open_store(store)
    plane = normalize_channels(np.asarray(stack.data[0, :, 0]), stack.normalization_ranges)
    whole = predictor.predict_plane(plane, tile=4096, factor=factor)
    assert (tiled.argmax(0) == whole.argmax(0)).mean() >= 0.999
    assert np.abs(tiled - whole).max() <= 0.2


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_labels_are_on_the_image_grid_where_the_nuclei_are(predictor, factor):
    """Val image 86f9087e (48 px nuclei) resized: labels keep its shape and match its nuclei."""
    image, labels = resized_annotated(*val_pair("86f9087e"), factor)
    found = grunet.segment(image, predictor, diameter=median_diameter(labels))
    assert found.shape == image.shape and found.dtype == np.uint32
    assert evaluate_labels(labels, found)["f1_50"] >= 0.8


def test_nuclei_a_few_px_across_go_to_the_low_magnification_network(predictor):
    """The 20 val images shrunk x0.33 (nuclei 3-16 px, most upscaled x2 or more) at the labels'
    diameter: the shipped model, routing them to its low-magnification network, finds them
    (F1@0.5 >= 0.88; 0.889 when measured) better than its main network alone (stage 5 0.873,
    stage 6 0.881: its chromatin fine-tune also helps blurred nuclei)."""
    from grunet.evaluate import image_counts, summarize

    assert predictor.low_magnification is not None
    main = Predictor(load_checkpoint().build_model(), device="cpu", compile=False)
    main.metadata = predictor.metadata
    root = shared_dataset("dsb2018_fluo")
    manifest = pd.read_csv(root / "manifest.csv")
    counts = {"routed": [], "main": []}
    for image_id in sorted(manifest[manifest.split == "val"].id):
        image, labels = resized_annotated(
            tifffile.imread(root / "images" / f"{image_id}.tif"),
            tifffile.imread(root / "labels" / f"{image_id}.tif"),
            0.33,
        )
        diameter = median_diameter(labels)
        for name, model in (("routed", predictor), ("main", main)):
            found = grunet.segment(image, model, diameter=diameter)
            counts[name].append(image_counts(labels, found))
    routed, alone = summarize(counts["routed"])["f1_50"], summarize(counts["main"])["f1_50"]
    assert routed >= 0.88 and routed >= alone + 0.005, (routed, alone)


def test_api_diameter_reaches_prediction(predictor, nuclei_timelapse):
    """grunet.segment(..., diameter=d) = segmenting the probabilities predicted at D0/d."""
    frame = nuclei_timelapse[5, :200, :200]
    plane = normalize_channels(frame[None].astype(np.float32))
    scale = resolve_scale(predictor.object_diameter, diameter=30.0)
    probs = predictor.predict_plane(plane, factor=scale.factor)
    expected = segment_plane(probs, **predictor.segmentation_options_for(scale))
    got = grunet.segment(frame, predictor, diameter=30.0)
    np.testing.assert_array_equal(got, expected)
    radius = SegmentOptions().grow_radius * 30.0 / predictor.object_diameter
    assert predictor.segmentation_options_for(scale)["grow_radius"] == round(radius)


def grunet_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grunet", *map(str, args)], capture_output=True, text=True
    )


def test_cli_diameter_options_reach_prediction_and_are_recorded(frame_store, tmp_path, predictor):
    d0 = predictor.object_diameter
    out = tmp_path / "px.probs.zarr"
    result = grunet_cli("predict", frame_store, "-o", out, "--diameter", 30, "--no-progress")
    assert result.returncode == 0, result.stderr
    scale = zarr.open_group(str(out), mode="r").attrs["grunet"]["object_scale"]
    assert scale["source"] == "diameter" and scale["diameter"] == 30.0
    assert scale["factor"] == pytest.approx(d0 / 30.0)
    out = tmp_path / "um.probs.zarr"
    result = grunet_cli("predict", frame_store, "-o", out, "--diameter-um", 12, "--no-progress")
    assert result.returncode == 0, result.stderr
    attrs = zarr.open_group(str(out), mode="r").attrs["grunet"]
    assert attrs["object_scale"]["diameter"] == pytest.approx(24.0)  # 12 µm / 0.5 µm per px
    assert attrs["segmentation"]["grow_radius"] == round(SegmentOptions().grow_radius * 24.0 / d0)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--diameter", "0"], "--diameter: must be a positive number"),
        (["--diameter", "-4"], "--diameter: must be a positive number"),
        (["--diameter", "nan"], "--diameter: must be a positive number"),
        (["--diameter", "1e6"], "--diameter: a nucleus diameter of 1e+06 px is outside"),
        (["--diameter-um", "0.001"], "--diameter-um: a nucleus diameter of 0.002 px"),
    ],
)
def test_bad_diameter_is_one_line_naming_the_file_and_the_option(
    frame_store, tmp_path, args, problem
):
    result = grunet_cli("predict", frame_store, "-o", tmp_path / "p.zarr", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(frame_store) in result.stderr
    assert problem in result.stderr
    assert not (tmp_path / "p.zarr").exists()


def test_diameter_um_without_pixel_size_names_the_file_and_the_option(tmp_path, nuclei_timelapse):
    tifffile.imwrite(tmp_path / "frame.tif", nuclei_timelapse[0, :64, :64])
    result = grunet_cli("run", tmp_path / "frame.tif", "-o", tmp_path / "out", "--diameter-um", 8)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]  # after the conversion's progress bar
    assert "error" not in result.stderr.replace(error, "")
    assert "frame.ome.zarr: --diameter-um: the image has no physical pixel size" in error
    assert not (tmp_path / "out" / "counts.csv").exists()


# Nuclei of the demo time-lapse counted by eye on the frames rendered at 2× (gamma 0.5), those
# cut by the image border included (4 in each frame): frame 0 has 15, frames 14 and 29 have 14.
DEMO_COUNTS = {0: 15, 14: 14, 29: 14}


@pytest.mark.xfail(
    strict=True,
    reason="the demo's cells glow dimly around their bright nuclei. Trained with cell-body glow "
    "and nucleoli augmentation (stage 5) the model no longer takes whole cells for nuclei "
    "(stage 3: 80 / 45 / 42 objects on frames 0 / 14 / 29; stage 5: 25 / 27 / 22); with condensed "
    "chromatin (stage 6, shipped) it cuts fewer textured nuclei, but still counts 20 / 24 / 20 "
    "(grunet.segment 19 / 24 / 18; 22 / 23 / 23 at the true 35 px): cytoplasm crescents beside "
    "some nuclei and mitotic nuclei split (issue 13, open)",
)
def test_demo_time_lapse_counts_are_right_with_the_model_defaults(tmp_path, nuclei_timelapse):
    """`grunet run` on frames 0, 14, 29 with no option: automatic diameter, model thresholds."""
    from grunet.pipeline import run_pipeline

    frames = sorted(DEMO_COUNTS)
    tifffile.imwrite(tmp_path / "demo.tif", nuclei_timelapse[frames], photometric="minisblack")
    counts = pd.read_csv(
        run_pipeline([tmp_path / "demo.tif"], tmp_path / "out", axes="TYX", progress=False)
    )
    found = dict(zip(frames, counts.sort_values("t")["n_cells"]))
    assert all(abs(found[t] - DEMO_COUNTS[t]) <= 1 for t in frames), found
