"""Z-stacks: anisotropy, orthogonal-view prediction, one label per nucleus in z, 3D tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from grunet.errors import InputError
from grunet.measure3d import measure_stack_3d
from grunet.predict3d import (
    Geometry,
    anisotropy_of,
    network_shape,
    plan_boxes,
    resample_box,
    segment_volume,
    support3,
)

# --------------------------------------------------------------------------- anisotropy


def test_anisotropy_from_metadata_override_and_default():
    assert anisotropy_of({"z": 2.0, "y": 0.5, "x": 0.5}) == (4.0, "metadata")
    assert anisotropy_of({"z": 2.0, "y": 0.5, "x": 0.5}, 2.18) == (2.18, "given")
    assert anisotropy_of({"z": None, "y": 0.5, "x": 0.5}) == (1.0, "assumed")
    assert anisotropy_of({}) == (1.0, "assumed")
    with pytest.raises(InputError, match="anisotropy"):
        anisotropy_of({}, 0.0, "a.tif")
    with pytest.raises(InputError, match="a.tif"):
        anisotropy_of({}, "abc", "a.tif")


def test_demo_stack_anisotropy_comes_from_its_source_metadata(demo_images):
    from grunet.io.readers import read_image

    stack = read_image("demo:nuclei_3d")
    value, source = anisotropy_of(stack.pixel_sizes)
    assert source == "metadata"
    assert value == pytest.approx(0.29 / 0.26)


def test_converted_store_keeps_pixel_sizes_for_anisotropy(tmp_path):
    import tifffile

    from grunet.io import open_store
    from grunet.io.convert import convert

    tifffile.imwrite(tmp_path / "s.tif", np.zeros((4, 16, 16), np.uint16), photometric="minisblack")
    (store,) = convert(
        [tmp_path / "s.tif"], tmp_path / "out", pixel_size={"z": 1.3, "y": 0.65, "x": 0.65}
    )
    assert anisotropy_of(open_store(store).pixel_sizes) == (pytest.approx(2.0), "metadata")


# --------------------------------------------------------------------------- geometry


def test_resampled_box_equals_crop_of_whole_resample():
    rng = np.random.default_rng(0)
    data = rng.random((1, 9, 30, 26)).astype(np.float32)
    shape, scaled = (9, 30, 26), network_shape((9, 30, 26), 0.7, 2.5)
    whole = resample_box(data, shape, scaled, (0, scaled[0], 0, scaled[1], 0, scaled[2]))
    box = (3, 12, 5, 17, 2, 11)
    sup = support3(shape, scaled, box)
    part = data[:, sup[0] : sup[1], sup[2] : sup[3], sup[4] : sup[5]]
    crop = resample_box(part, shape, scaled, box, sup[::2])
    np.testing.assert_allclose(crop, whole[:, 3:12, 5:17, 2:11], rtol=1e-5, atol=1e-6)


def test_block_plan_covers_the_stack_and_bounds_the_window():
    shape = (300, 500, 700)
    boxes = plan_boxes(shape, 1.0, 1.0, 32, max_voxels=2**21)
    covered = np.zeros(shape, np.int8)
    geo = Geometry(shape, 1.0, 1.0, 32)
    for b in boxes:
        covered[b[0] : b[1], b[2] : b[3], b[4] : b[5]] += 1
        w = geo.window(b)
        assert (w[1] - w[0]) * (w[3] - w[2]) * (w[5] - w[4]) <= 2**21
    assert (covered == 1).all()
    assert any(b[1] - b[0] < shape[0] for b in boxes)  # too deep for all-Z blocks: z is cut


# --------------------------------------------------------------------------- z behaviour


def _real_nucleus(nuclei_3d):
    """A real nucleus plane of the demo stack on its own background, and its diameter (px)."""
    image, labels = nuclei_3d
    z = 35
    ids, areas = np.unique(labels[z], return_counts=True)
    inner = [
        (a, i)
        for i, a in zip(ids, areas)
        if i
        and not np.isin(
            i, np.concatenate([labels[z][[0, -1]].ravel(), labels[z][:, [0, -1]].ravel()])
        )
    ]
    _, label = max(inner)
    mask = labels[z] == label
    (ys, xs), margin = ndi.find_objects(mask.astype(np.uint8))[0], 10
    crop = (
        slice(max(ys.start - margin, 0), ys.stop + margin),
        slice(max(xs.start - margin, 0), xs.stop + margin),
    )
    background = np.median(image[z][labels[z] == 0])
    near = ndi.binary_dilation(mask, iterations=2)[crop]
    plane = np.where(near, image[z][crop], background).astype(np.float32)
    return plane, background, float(2 * np.sqrt(mask.sum() / np.pi))


@pytest.mark.usefixtures("one_torch_thread")
def test_two_nuclei_stacked_in_z_get_two_labels(nuclei_3d):
    plane, background, diameter = _real_nucleus(nuclei_3d)
    planes, gap = 8, 2
    anisotropy = diameter / planes  # each nucleus as tall as it is wide
    empty = np.full_like(plane, background)
    stack = np.stack(
        [empty] * 2 + [plane] * planes + [empty] * gap + [plane] * planes + [empty] * 2
    )
    labels = segment_volume(stack, anisotropy=anisotropy, diameter=diameter)
    centre = labels[:, plane.shape[0] // 2, plane.shape[1] // 2]
    top, bottom = centre[2 : 2 + planes], centre[2 + planes + gap : 2 + 2 * planes + gap]
    assert (top > 0).all() and (bottom > 0).all()
    assert len(set(top)) == 1 and len(set(bottom)) == 1 and top[0] != bottom[0]
    assert len(np.unique(labels[labels > 0])) == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_nucleus_spanning_15_planes_gets_one_label(nuclei_3d):
    plane, background, diameter = _real_nucleus(nuclei_3d)
    planes = 15
    empty = np.full_like(plane, background)
    stack = np.stack([empty] * 2 + [plane] * planes + [empty] * 2)
    labels = segment_volume(stack, anisotropy=diameter / planes, diameter=diameter)
    ids = np.unique(labels[labels > 0])
    assert len(ids) == 1
    assert (labels[2 : 2 + planes, plane.shape[0] // 2, plane.shape[1] // 2] == ids[0]).all()


# --------------------------------------------------------------------------- 3D tables


def test_3d_table_blockwise_equals_whole_and_regionprops():
    from skimage.measure import regionprops_table

    rng = np.random.default_rng(1)
    labels = np.zeros((2, 10, 40, 50), np.uint32)
    labels[0, 2:9, 5:30, 10:45] = 1
    labels[0, 5:10, 25:39, 3:20] = 2
    labels[1, 1:4, 1:5, 1:5] = 7
    image = rng.integers(0, 4000, (2, 2, 10, 40, 50)).astype(np.uint16)
    sizes = {"z": 2.0, "y": 0.5, "x": 0.5}
    whole = measure_stack_3d(labels, image, pixel_sizes=sizes, channel_names=["dna", "gfp"])
    blocks = measure_stack_3d(
        labels, image, pixel_sizes=sizes, channel_names=["dna", "gfp"], block=7
    )
    pd.testing.assert_frame_equal(whole, blocks)
    assert whole.groupby("t")["label"].nunique().tolist() == [2, 1]  # cells per time point
    ref = regionprops_table(
        labels[0],
        np.moveaxis(image[0], 0, -1),
        properties=["label", "area", "centroid", "bbox", "intensity_mean", "intensity_max"],
    )
    t0 = whole[whole["t"] == 0]
    np.testing.assert_array_equal(t0["volume"], ref["area"])
    for k, axis in enumerate("zyx"):
        np.testing.assert_allclose(t0[f"centroid_{axis}"], ref[f"centroid-{k}"])
        np.testing.assert_array_equal(t0[f"bbox_min_{axis}"], ref[f"bbox-{k}"])
        np.testing.assert_array_equal(t0[f"bbox_max_{axis}"], ref[f"bbox-{k + 3}"])
    np.testing.assert_allclose(t0["mean_intensity_gfp"], ref["intensity_mean-1"])
    np.testing.assert_allclose(t0["max_intensity_dna"], ref["intensity_max-0"])
    np.testing.assert_allclose(t0["volume_um3"], ref["area"] * 0.5)
    np.testing.assert_allclose(t0["equivalent_diameter_um"], np.cbrt(6 * ref["area"] * 0.5 / np.pi))


# --------------------------------------------------------------------------- blocks and stores


@pytest.mark.usefixtures("one_torch_thread")
def test_blockwise_prediction_matches_whole_stack(nuclei_3d):
    from grunet.api import load_model
    from grunet.predict3d import predict_volume
    from grunet.preprocess import normalize_channels

    image = nuclei_3d[0][20:44, 60:188, 40:168].astype(np.float32)  # real nuclei, (24, 128, 128)
    norm = normalize_channels(image[None])
    predictor = load_model(device="cpu")
    options = {"factor": 0.4, "anisotropy": 0.29 / 0.26}
    whole = predict_volume(predictor, norm, **options)
    tiled = predict_volume(predictor, norm, tile=48, max_voxels=2**14, **options)  # z cut too
    agree = (whole.argmax(0) == tiled.argmax(0)).mean()
    # blocks of ~20 network px per side, every one cut on all sides: measured 99.25 % (stage 3
    # model), 98.84 % (stage 5, which weighs more context: is a plateau around a bright nucleus
    # its cytoplasm?); tile 64 is exact for both (the whole volume fits one window)
    assert agree > 0.985, agree
    assert np.abs(whole - tiled).mean() < 0.01


@pytest.mark.usefixtures("one_torch_thread")
def test_store_prediction_records_anisotropy_and_3d_sizes(tmp_path, nuclei_3d):
    import zarr

    from grunet import io as gio
    from grunet.io import ImageStack
    from grunet.predict3d import predict_store_3d
    from grunet.segmentation import segment_store

    image = nuclei_3d[0][None, None, 24:40, 60:156, 40:136]  # (1, 1, 16, 96, 96)
    sizes = {"z": 0.58, "y": 0.26, "x": 0.26}
    store = gio.write_image(
        tmp_path / "s.ome.zarr", ImageStack(image, pixel_sizes=sizes), chunks=48
    )
    probs = predict_store_3d(store, tmp_path / "s.probs.zarr", diameter=48, progress=False)
    attrs = zarr.open_group(str(probs), mode="r").attrs["grunet"]
    assert attrs["anisotropy"] == {"value": pytest.approx(0.58 / 0.26), "source": "metadata"}
    assert attrs["segmentation"]["anisotropy"] == pytest.approx(0.58 / 0.26)
    assert attrs["segmentation"]["min_size"] > 0  # half-diameter sphere, in voxels
    assert zarr.open_array(str(probs / "probs"), mode="r").shape == (1, 3, 16, 96, 96)
    segment_store(probs, store)
    labels = np.asarray(gio.read_labels(store).compute())
    assert labels.shape == (1, 1, 16, 96, 96) and labels.max() >= 1


@pytest.mark.usefixtures("one_torch_thread")
def test_demo_stack_count_and_f1(nuclei_3d):
    """The demo stack with the model's own thresholds: 20 labelled nuclei (15-30 s on CPU).

    F1@0.5 0.950 (stage 2), 0.857 (stages 3-5: one object scale, no 3D data in the 2D
    training), 0.927 with 21 objects since stage 6 (condensed-chromatin augmentation)."""
    from grunet.evaluate import evaluate_labels

    image, truth = nuclei_3d
    labels = segment_volume(image, anisotropy=0.29 / 0.26)
    metrics = evaluate_labels(truth, labels)
    assert abs(metrics["n_pred"] - 20) <= 1
    assert metrics["f1_50"] >= 0.9


def test_deep_stacks_are_cut_in_z_slabs_within_the_block_budget():
    import dask.array as da

    from grunet.segmentation import MAX_BLOCK_VOXELS, _grid

    deep = da.zeros((1, 3, 3000, 512, 512), chunks=(1, 3, 1, 512, 512), dtype=np.float16)
    grid = _grid(deep, None, three_d=True)
    assert len(grid.zs) > 2 and grid.z_faces
    biggest = np.diff(grid.zs).max() * np.diff(grid.ys).max() * np.diff(grid.xs).max()
    assert biggest <= MAX_BLOCK_VOXELS
    shallow = _grid(deep[:, :, :60], None, three_d=True)
    assert list(shallow.zs) == [0, 60] and not shallow.z_faces  # all of Z in one block
