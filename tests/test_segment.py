"""Segmentation: chunked == whole (up to relabelling) on real nuclei, ids, holes, sizes, stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_dataset
from scipy import ndimage as ndi

import grunet.segmentation as seg
from grunet.errors import InputError
from grunet.preprocess import targets_from_labels
from grunet.segmentation import SegmentOptions, instances_from_probabilities, segment_probabilities


def probs_from_labels(labels: np.ndarray, seed: int = 0, noise: float = 0.1) -> np.ndarray:
    """Realistic (3, ...) float16 probabilities: smoothed one-hot training targets plus noise."""
    targets = targets_from_labels(labels)
    onehot = np.stack([(targets == k).astype(np.float32) for k in range(3)])
    smooth = ndi.gaussian_filter(onehot, (0,) + (1,) * labels.ndim)
    noisy = smooth + np.random.default_rng(seed).normal(0, noise, onehot.shape)
    noisy = np.clip(noisy, 0, None)
    return (noisy / (noisy.sum(0, keepdims=True) + 1e-6)).astype(np.float16)


def assert_same_up_to_relabelling(a: np.ndarray, b: np.ndarray) -> None:
    """Equal partitions: same background, and a one-to-one map between the ids of a and b."""
    np.testing.assert_array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert pairs.shape[1] == np.unique(a).size == np.unique(b).size


def n_cells(labels: np.ndarray) -> int:
    return int(np.unique(labels[labels > 0]).size)


@pytest.fixture(scope="module")
def plane(nuclei_3d) -> tuple[np.ndarray, np.ndarray]:
    """A real 256x256 labelled nuclei plane and its probabilities."""
    labels = nuclei_3d[1][30]
    return labels, probs_from_labels(labels)


@pytest.fixture(scope="module")
def dense_plane() -> tuple[np.ndarray, np.ndarray]:
    """The most crowded DSB2018 fluorescence image (520x696, 369 nuclei), if present."""
    import pandas as pd
    import tifffile

    root = shared_dataset("dsb2018_fluo")
    manifest = pd.read_csv(root / "manifest.csv")
    name = manifest.sort_values("n_nuclei").iloc[-1]["id"]
    labels = tifffile.imread(root / "labels" / f"{name}.tif").astype(np.uint32)
    return labels, probs_from_labels(labels, seed=1)


def test_segmentation_recovers_the_real_nuclei(plane):
    labels, probs = plane
    found = instances_from_probabilities(probs)
    assert found.dtype == np.uint32 and found.shape == labels.shape
    assert abs(n_cells(found) - n_cells(labels)) <= 1
    # every true nucleus (bar tiny cross-sections) is covered mostly by one predicted cell
    for cell in np.unique(labels[labels > 0]):
        if (labels == cell).sum() < 100:
            continue
        ids, counts = np.unique(found[labels == cell], return_counts=True)
        assert counts.max() / counts.sum() > 0.8 and ids[counts.argmax()] > 0


@pytest.mark.parametrize("block", [64, 128, 256])
def test_chunked_labels_equal_whole_image_labels_2d(plane, block):
    _, probs = plane
    whole = instances_from_probabilities(probs)
    chunked = instances_from_probabilities(probs, block=block)
    assert_same_up_to_relabelling(whole, chunked)


@pytest.mark.shared_data
@pytest.mark.parametrize("block", [64, 200, 512])
def test_chunked_labels_equal_whole_image_labels_on_crowded_image(dense_plane, block):
    _, probs = dense_plane
    whole = instances_from_probabilities(probs)
    assert n_cells(whole) > 300
    assert_same_up_to_relabelling(whole, instances_from_probabilities(probs, block=block))


def test_chunked_labels_equal_whole_volume_labels_3d(nuclei_3d):
    labels = nuclei_3d[1][10:50, :160, :160]
    probs = probs_from_labels(labels)
    whole = instances_from_probabilities(probs)  # (3, Z, Y, X): seeds and growth across z
    assert whole.shape == labels.shape
    assert abs(n_cells(whole) - n_cells(labels)) <= 2
    assert_same_up_to_relabelling(whole, instances_from_probabilities(probs, block=64))


@pytest.mark.shared_data
def test_chunked_labels_equal_whole_volume_labels_bbbc050():
    import tifffile

    root = shared_dataset("bbbc050_3d")
    labels = tifffile.imread(sorted((root / "labels").glob("*.tif"))[0]).astype(np.uint32)
    probs = probs_from_labels(labels, seed=2)
    whole = instances_from_probabilities(probs)
    assert n_cells(whole) >= 0.8 * n_cells(labels)
    assert_same_up_to_relabelling(whole, instances_from_probabilities(probs, block=48))


def test_cell_on_a_four_chunk_corner_keeps_one_id(plane):
    labels, _ = plane
    cells = np.unique(labels[labels > 0])
    sizes = ndi.sum_labels(np.ones_like(labels), labels, cells)
    big = cells[np.argmax(sizes)]
    cy, cx = (int(round(c)) for c in ndi.center_of_mass(labels == big))
    crop = labels[max(cy - 64, 0) : cy + 64, max(cx - 64, 0) : cx + 64]
    corner = (cy - max(cy - 64, 0), cx - max(cx - 64, 0))
    probs = probs_from_labels(crop)
    whole = instances_from_probabilities(probs)
    chunked = instances_from_probabilities(probs, block=corner)
    assert_same_up_to_relabelling(whole, chunked)
    ids = chunked[crop == big]
    cell = np.bincount(ids).argmax()
    mask = chunked == cell
    y, x = corner
    quadrants = [mask[:y, :x], mask[:y, x:], mask[y:, :x], mask[y:, x:]]
    assert all(q.any() for q in quadrants), "the cell spans all four chunks"


def test_naive_per_block_segmentation_is_caught(plane):
    """The equality check catches masks hard-cut (and split) at every block face."""
    _, probs = plane
    whole = instances_from_probabilities(probs)
    naive = np.zeros_like(whole)
    for y in range(0, whole.shape[0], 64):
        for x in range(0, whole.shape[1], 64):
            part = instances_from_probabilities(probs[:, y : y + 64, x : x + 64])
            naive[y : y + 64, x : x + 64] = np.where(part > 0, part + naive.max(), 0)
    with pytest.raises(AssertionError):
        assert_same_up_to_relabelling(whole, naive)


def test_touching_cells_meeting_at_a_block_face_stay_separate(nuclei_3d):
    labels = nuclei_3d[1][30]
    # two distinct nuclei whose masks touch (4-adjacent): put their contact on a block face
    right = labels[:, :-1], labels[:, 1:]
    touching = (right[0] > 0) & (right[1] > 0) & (right[0] != right[1])
    ys, xs = np.nonzero(touching)
    assert ys.size, "the real plane has touching nuclei"
    y, x = int(ys[ys.size // 2]), int(xs[ys.size // 2]) + 1
    x0 = max(x - 64, 0)
    crop = labels[:, x0 : x0 + 128]
    a, b = labels[y, x - 1], labels[y, x]
    probs = probs_from_labels(crop)
    whole = instances_from_probabilities(probs)
    chunked = instances_from_probabilities(probs, block=(256, x - x0))
    assert_same_up_to_relabelling(whole, chunked)
    id_a = np.bincount(chunked[crop == a]).argmax()
    id_b = np.bincount(chunked[crop == b]).argmax()
    assert id_a != id_b and id_a > 0 and id_b > 0


def test_each_block_reads_only_its_neighbours(dense_or_plane, monkeypatch):
    """Block-local growth: a block reads scratch data of the blocks within its halo only."""
    import threading

    _, probs = dense_or_plane
    reads, current = [], threading.local()
    grown_block, get = seg._grown_block, seg._Scratch.get

    def spy_block(key, *args):
        current.key = key
        return grown_block(key, *args)

    def spy_get(self, other, name, region=(Ellipsis,)):
        if getattr(current, "key", None) is not None:
            reads.append((current.key, other))
        return get(self, other, name, region)

    monkeypatch.setattr(seg, "_grown_block", spy_block)
    monkeypatch.setattr(seg._Scratch, "get", spy_get)
    labels = instances_from_probabilities(probs, block=64)
    assert n_cells(labels) > 10
    reach = -(-SegmentOptions().halo // 64)  # blocks within the halo (77 px): 2
    assert reads and all(max(abs(a[2] - b[2]), abs(a[3] - b[3])) <= reach for a, b in reads)
    blocks = int(np.ceil(probs.shape[1] / 64) * np.ceil(probs.shape[2] / 64))
    assert len(reads) <= 2 * (2 * reach + 1) ** 2 * blocks  # seeds + priorities


def test_scratch_folder_of_a_lazy_input_is_removed_with_the_labels(plane, tmp_path):
    import gc

    import dask.array as da

    _, probs = plane
    lazy = da.from_array(probs[None, :, None], chunks=(1, 3, 1, 100, 100))
    labels = segment_probabilities(lazy, scratch=tmp_path / "labels")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".labels")]
    assert_same_up_to_relabelling(labels.compute()[0, 0, 0], instances_from_probabilities(probs))
    del labels
    gc.collect()
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def dense_or_plane(request, plane):
    try:
        return request.getfixturevalue("dense_plane")
    except pytest.skip.Exception:
        return plane


def test_label_ids_above_int32_do_not_wrap(plane):
    _, probs = plane
    stack = probs[None, :, None]
    start = 2**31 - 5
    labels = segment_probabilities(stack, block=64, first_id=start).compute()
    assert labels.dtype == np.uint32
    ids = np.unique(labels[labels > 0])
    assert ids.min() == start + 1 and ids.max() > 2**31
    assert_same_up_to_relabelling(instances_from_probabilities(probs), labels[0, 0, 0])


def test_more_ids_than_uint32_holds_is_refused(plane):
    _, probs = plane
    with pytest.raises(InputError, match="uint32"):
        segment_probabilities(probs[None, :, None], first_id=2**32 - 3)


def test_ids_are_unique_across_the_whole_stack(plane):
    _, probs = plane
    stack = np.stack([probs, probs[:, ::-1]])[:, :, None]  # (T=2, 3, Z=1, Y, X)
    stack = np.concatenate([stack, stack], axis=2)  # Z=2, segmented plane by plane
    labels = segment_probabilities(stack, block=100, three_d=False).compute()
    assert labels.shape == (2, 1, 2, *probs.shape[1:])
    planes = [set(np.unique(labels[t, 0, z])) - {0} for t in range(2) for z in range(2)]
    assert all(planes) and sum(map(len, planes)) == len(set.union(*planes))


def test_empty_probabilities_give_zero_cells():
    probs = np.zeros((3, 130, 90), np.float16)
    probs[0] = 1  # all background
    labels = instances_from_probabilities(probs, block=64)
    assert labels.shape == (130, 90) and labels.dtype == np.uint32 and not labels.any()


def test_min_size_removes_small_cells_the_same_whole_or_chunked(plane):
    _, probs = plane
    all_cells = instances_from_probabilities(probs)
    sizes = np.bincount(all_cells.ravel())[1:]
    threshold = int(np.median(sizes[sizes > 0]))
    opts = SegmentOptions(min_size=threshold)
    whole = instances_from_probabilities(probs, options=opts)
    chunked = instances_from_probabilities(probs, options=opts, block=64)
    assert_same_up_to_relabelling(whole, chunked)
    kept = np.bincount(chunked.ravel())[1:]
    assert kept[kept > 0].min() >= threshold
    assert 0 < n_cells(chunked) < n_cells(all_cells)
    # removal only: kept cells are unchanged
    np.testing.assert_array_equal(whole > 0, np.isin(all_cells, np.unique(all_cells[whole > 0])))


def test_holes_enclosed_by_one_cell_are_filled(plane):
    labels, _ = plane
    cells = np.unique(labels[labels > 0])
    big = cells[np.argmax(ndi.sum_labels(np.ones_like(labels), labels, cells))]
    core = ndi.binary_erosion(labels == big, iterations=6)
    cy, cx = (int(round(c)) for c in ndi.center_of_mass(core))
    probs = probs_from_labels(labels).astype(np.float32)
    hole = np.zeros(labels.shape, bool)
    hole[cy - 2 : cy + 3, cx - 2 : cx + 3] = True  # 25 px of "background" inside the nucleus
    probs[:, hole] = np.array([1.0, 0.0, 0.0])[:, None]
    filled = instances_from_probabilities(probs, block=64)
    assert (filled[hole] == filled[cy, cx]).all() and filled[cy, cx] > 0
    kept = instances_from_probabilities(probs, options=SegmentOptions(max_hole_size=0))
    assert not kept[hole].any()
    assert_same_up_to_relabelling(filled, instances_from_probabilities(probs))


def test_wrong_probability_shape_is_an_error():
    with pytest.raises(ValueError, match=r"\(3, Y, X\)"):
        instances_from_probabilities(np.zeros((2, 8, 8)))


def test_segment_store_writes_labels_with_provenance(tmp_path, nuclei_3d):
    from grunet import io as gio
    from grunet.cli import main
    from grunet.io import ImageStack

    image, labels = nuclei_3d[0][28:30, :160, :128], nuclei_3d[1][28:30, :160, :128]
    store = gio.write_image(
        tmp_path / "s.ome.zarr", ImageStack(image[None, None]), chunks=(1, 1, 1, 64, 64)
    )
    probs = np.stack([probs_from_labels(p) for p in labels], axis=1)[None]  # (1, 3, 2, Y, X)
    probs_path = gio.write_array(
        tmp_path / "s.probs.zarr",
        probs,
        name="probs",
        chunks=(1, 3, 1, 64, 64),
        attrs={"model_sha256": "abc"},
    )
    done = tmp_path / "done.json"
    argv = [str(probs_path), "--image", str(store), "--mode", "2d", "-o", str(done)]
    assert main(["segment", *argv]) == 0
    written = gio.read_labels(store).compute()
    expected = np.stack([instances_from_probabilities(p) for p in probs[0].transpose(1, 0, 2, 3)])
    assert written.shape == (1, 1, 2, 160, 128) and written.dtype == np.uint32
    for z in range(2):
        assert_same_up_to_relabelling(written[0, 0, z], expected[z])
    assert json.loads(done.read_text())["labels"].endswith("labels/cells")
    import zarr

    attrs = zarr.open_group(str(store / "labels" / "cells"), mode="r").attrs["grunet"]
    assert attrs["model_sha256"] == "abc" and attrs["options"]["min_size"] == 0
    # an existing output is refused without --overwrite (exit 2), accepted with it
    assert main(["segment", *argv]) == 2
    assert main(["segment", *argv, "--overwrite"]) == 0


def test_segment_plane_takes_checkpoint_options_and_chunks(plane):
    import dask.array as da

    _, probs = plane
    opts = {"seed_threshold": 0.6, "foreground_threshold": 0.4, "min_seed_size": 4.0}
    whole = seg.segment_plane(probs, **opts)
    expected = instances_from_probabilities(
        probs, options=SegmentOptions(seed_threshold=0.6, foreground_threshold=0.4)
    )
    np.testing.assert_array_equal(whole, expected)
    lazy = da.from_array(probs, chunks=(3, 64, 64))
    assert_same_up_to_relabelling(whole, seg.segment_plane(lazy, chunk_size=100, **opts))
    with pytest.raises(ValueError, match="unknown segmentation option"):
        seg.segment_plane(probs, seed=1)
