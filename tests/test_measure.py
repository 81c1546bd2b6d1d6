"""Per-cell tables: chunked measurement equals whole-plane regionprops_table, files, provenance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import shared_dataset
from scipy import ndimage as ndi
from skimage.measure import regionprops_table

from grunet.measure import measure_stack, read_provenance, table_columns

REFERENCE = {  # regionprops_table column -> our column
    "label": "label",
    "centroid-0": "centroid_y",
    "centroid-1": "centroid_x",
    "bbox-0": "bbox_min_y",
    "bbox-1": "bbox_min_x",
    "bbox-2": "bbox_max_y",
    "bbox-3": "bbox_max_x",
    "area": "area",
    "perimeter": "perimeter",
    "equivalent_diameter_area": "equivalent_diameter",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "axis_major_length": "major_axis_length",
    "axis_minor_length": "minor_axis_length",
    "orientation": "orientation",
}
PROPERTIES = ["label", "centroid", "bbox", "area", "perimeter", "equivalent_diameter_area"]
PROPERTIES += ["eccentricity", "solidity", "axis_major_length", "axis_minor_length"]
PROPERTIES += ["orientation", "intensity_mean", "intensity_min", "intensity_max"]


EXACT = {"label", "centroid-0", "centroid-1", "bbox-0", "bbox-1", "bbox-2", "bbox-3", "area"}
EXACT |= {"equivalent_diameter_area", "solidity"}


def assert_equals_regionprops(table: pd.DataFrame, labels, image, channels) -> None:
    """Every column equals regionprops_table on the whole plane (integrated: ndi.sum_labels).

    Positions, areas, the convex hull and min / max are identical; the ellipse columns and the
    perimeter are sums taken in another order (equal to 1e-12); an orientation of exactly
    +-pi/2 is the same axis whichever sign rounding gives it; a mean of float32 intensities is
    summed in float64 here (regionprops: float32).
    """
    ref = pd.DataFrame(regionprops_table(labels, np.moveaxis(image, 0, -1), properties=PROPERTIES))
    assert len(table) == len(ref)
    for theirs, ours in REFERENCE.items():
        got, want = table[ours].to_numpy(), ref[theirs].to_numpy()
        if theirs in EXACT:
            np.testing.assert_array_equal(got, want, ours)
        elif theirs == "orientation":
            turn = np.angle(np.exp(2j * (got - want))) / 2  # difference modulo pi
            np.testing.assert_allclose(turn, 0, atol=1e-9, err_msg=ours)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=ours)
    for c, name in enumerate(channels):
        for kind in ("min", "max"):
            np.testing.assert_array_equal(
                table[f"{kind}_intensity_{name}"].to_numpy(), ref[f"intensity_{kind}-{c}"]
            )
        mean, ref_mean = table[f"mean_intensity_{name}"], ref[f"intensity_mean-{c}"]
        rtol = 0 if np.issubdtype(image.dtype, np.integer) else 1e-5
        np.testing.assert_allclose(mean, ref_mean, rtol=rtol)
        total = ndi.sum_labels(image[c].astype(np.float64), labels, ref["label"].to_numpy())
        np.testing.assert_allclose(table[f"integrated_intensity_{name}"], total, rtol=1e-12)


def crossing_cells(labels: np.ndarray, block: int) -> int:
    """How many cells have pixels in more than one block."""
    blocks = (np.arange(labels.shape[0])[:, None] // block) * 10_000 + (
        np.arange(labels.shape[1])[None, :] // block
    )
    pairs = np.unique(np.stack([labels[labels > 0], blocks[labels > 0]]), axis=1)
    ids, n = np.unique(pairs[0], return_counts=True)
    return int((n > 1).sum())


@pytest.fixture(scope="module")
def plane(nuclei_3d):
    """A real nuclei plane (uint16) with its labels and a second, derived channel."""
    image, labels = nuclei_3d[0][30], nuclei_3d[1][30].astype(np.uint32)
    second = ndi.gaussian_filter(image.astype(np.float32), 2)
    return labels, np.stack([image.astype(np.float32), second])


@pytest.mark.parametrize("block", [64, 100])
def test_chunked_table_equals_regionprops_table_on_whole_plane(plane, block):
    labels, image = plane
    assert crossing_cells(labels, block) >= 3
    table = measure_stack(
        labels[None, None], image[None, :, None], channel_names=["DAPI", "blur 2"], block=block
    )
    assert list(table.columns) == table_columns(["DAPI", "blur_2"])
    assert_equals_regionprops(table, labels, image, ["DAPI", "blur_2"])


@pytest.mark.shared_data
def test_chunked_table_equals_regionprops_on_crowded_image():
    import tifffile

    root = shared_dataset("dsb2018_fluo")
    name = pd.read_csv(root / "manifest.csv").sort_values("n_nuclei").iloc[-1]["id"]
    labels = tifffile.imread(root / "labels" / f"{name}.tif").astype(np.uint32)
    image = tifffile.imread(root / "images" / f"{name}.tif")[None]
    assert crossing_cells(labels, 128) > 30
    table = measure_stack(labels[None, None], image[None, :, None], block=128)
    assert_equals_regionprops(table, labels, image, ["ch0"])


def test_cell_in_pieces_across_blocks_is_one_row(plane):
    """A label whose parts sit in different blocks (e.g. a 3D cell's cross-section)."""
    labels, image = plane
    labels = labels.copy()
    ids = np.unique(labels[labels > 0])
    first, last = ids[0], ids[-1]
    labels[labels == last] = first  # two real nuclei far apart now share one id
    table = measure_stack(labels[None, None], image[None, :, None], block=64)
    assert (table["label"] == first).sum() == 1
    assert_equals_regionprops(table, labels, image, ["ch0", "ch1"])


def test_rows_per_cell_and_plane_for_3d_labels(nuclei_3d):
    labels = nuclei_3d[1][25:29, :128, :128].astype(np.uint32)
    table = measure_stack(labels[None], None, block=64)  # (T=1, Z, Y, X), no intensities
    for z in range(labels.shape[0]):
        rows = table[table["z"] == z]
        assert sorted(rows["label"]) == sorted(np.unique(labels[z][labels[z] > 0]))
        ref = regionprops_table(labels[z], properties=["label", "area"])
        np.testing.assert_array_equal(rows["area"], ref["area"])
    assert not any("intensity" in c for c in table.columns)


def test_empty_labels_give_an_empty_table_with_all_columns():
    table = measure_stack(np.zeros((2, 1, 1, 70, 90), np.uint32), np.ones((2, 1, 1, 70, 90)))
    assert len(table) == 0 and list(table.columns) == table_columns(["ch0"])


@pytest.fixture()
def labelled_store(tmp_path, nuclei_3d):
    """A real 2-time-point store with pixel sizes, two channels and written labels."""
    from grunet import io as gio
    from grunet.io import ImageStack

    image = nuclei_3d[0][28:30, :150, :140]  # use z as t
    labels = nuclei_3d[1][28:30, :150, :140].astype(np.uint32)
    data = np.stack([image, image[:, ::-1]], axis=1)[:, :, None]  # (T=2, C=2, Z=1, Y, X)
    stack = ImageStack(data, pixel_sizes={"y": 0.5, "x": 0.25}, channel_names=["DAPI", "mirror"])
    store = gio.write_image(tmp_path / "A01.ome.zarr", stack, chunks=(1, 1, 1, 64, 64))
    gio.write_labels(store, labels[:, None], attrs={"model_sha256": "feed"})
    return store, data, labels


def test_measure_cli_writes_parquet_and_csv_with_provenance(labelled_store, tmp_path):
    from grunet.cli import main

    store, data, labels = labelled_store
    out = tmp_path / "cells" / "A01.parquet"
    argv = ["measure", str(store), "-o", str(out), "--meta", "well=A01", "condition=ctrl"]
    assert main(argv) == 0
    table = pd.read_parquet(out)
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert list(csv.columns) == list(table.columns)
    np.testing.assert_allclose(csv["area_um2"], table["area_um2"])
    assert set(table["sample"]) == {"A01"} and set(table["well"]) == {"A01"}
    np.testing.assert_allclose(table["centroid_y_um"], table["centroid_y"] * 0.5)
    np.testing.assert_allclose(table["area_um2"], table["area"] * 0.125)
    for t in range(2):  # streamed block by block: compare in label order
        rows = table[table["t"] == t].sort_values("label")
        assert_equals_regionprops(
            rows.reset_index(drop=True), labels[t], data[t, :, 0], ["DAPI", "mirror"]
        )
    provenance = read_provenance(out)
    assert provenance["model_sha256"] == "feed" and provenance["shape"]["t"] == 2
    assert provenance["metadata"] == {"well": "A01", "condition": "ctrl"}
    assert main(argv) == 2  # exists: refused without --overwrite
    assert main([*argv, "--overwrite"]) == 0


def test_bad_meta_option_is_a_one_line_error(labelled_store, tmp_path, capsys):
    from grunet.cli import main

    store, _, _ = labelled_store
    assert main(["measure", str(store), "-o", str(tmp_path / "x.parquet"), "--meta", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_table_streamed_in_small_batches_equals_the_whole_table(labelled_store, tmp_path):
    """Rows streamed to Parquet / CSV in many small batches (row groups) are the same table as
    one in-memory measurement: batching bounds memory and changes nothing else."""
    import pyarrow.parquet as pq

    from grunet import io as gio
    from grunet.measure import iter_tables, write_table

    store, _, _ = labelled_store
    stack, labels = gio.open_store(store), gio.read_labels(store, "cells")
    options = {"channel_names": stack.channel_names, "pixel_sizes": stack.pixel_sizes}
    batches = iter_tables(labels, stack.data, sample="A01", block=48, batch_rows=5, **options)
    parquet, csv = write_table(batches, tmp_path / "t.parquet", {"stage": "measure"})
    whole = measure_stack(labels, stack.data, sample="A01", **options)
    assert pq.ParquetFile(parquet).num_row_groups > 3
    for got in (pd.read_parquet(parquet), pd.read_csv(csv)):
        got = got.sort_values(["t", "z", "label"], ignore_index=True)
        pd.testing.assert_frame_equal(got, whole, check_dtype=False)
