"""Reading inputs lazily and writing canonical OME-Zarr stores, labels and plain arrays."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from grunet.errors import InputError
from grunet.io import (
    ImageStack,
    open_store,
    read_array,
    read_image,
    read_labels,
    write_array,
    write_image,
    write_labels,
)


@pytest.fixture(scope="module")
def crop(nuclei_3d) -> np.ndarray:
    """A real (8, 64, 80) uint16 crop of the 3D nuclei stack."""
    return np.ascontiguousarray(nuclei_3d[0][20:28, 60:124, 50:130])


@pytest.fixture(scope="module")
def label_crop(nuclei_3d) -> np.ndarray:
    return np.ascontiguousarray(nuclei_3d[1][20:28, 60:124, 50:130])


def _roundtrip(tmp_path, array, **imwrite):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, array, **imwrite)
    out = write_image(tmp_path / "out.ome.zarr", read_image(src))
    return src, open_store(out)


def test_2d_tiff_roundtrip_keeps_pixels_and_dtype(tmp_path, crop):
    src, stack = _roundtrip(tmp_path, crop[3])
    assert stack.shape == (1, 1, 1, 64, 80)
    assert stack.dtype == np.uint16
    np.testing.assert_array_equal(stack.data[0, 0, 0].compute(), crop[3])
    assert stack.attrs["source"] == str(src)


def test_zyx_imagej_roundtrip_keeps_spacing(tmp_path, crop):
    src, stack = _roundtrip(
        tmp_path,
        crop,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"},
    )
    assert stack.shape == (1, 1, 8, 64, 80)
    np.testing.assert_array_equal(stack.data[0, 0].compute(), crop)
    assert stack.pixel_sizes["z"] == pytest.approx(1.5)
    assert stack.pixel_sizes["y"] == pytest.approx(0.25)
    assert stack.pixel_sizes["x"] == pytest.approx(0.25)


def test_tcyx_imagej_hyperstack_roundtrip(tmp_path, crop):
    tcyx = np.stack([crop[:4], crop[4:]], axis=1)  # (4, 2, 64, 80)
    _, stack = _roundtrip(tmp_path, tcyx, imagej=True, metadata={"axes": "TCYX", "finterval": 30})
    assert stack.shape == (4, 2, 1, 64, 80)
    np.testing.assert_array_equal(stack.data[:, :, 0].compute(), tcyx)
    assert stack.pixel_sizes["t"] == pytest.approx(30)
    assert len(stack.normalization_ranges) == 2


def test_czyx_ome_tiff_roundtrip_keeps_pixel_sizes_and_channel_names(tmp_path, crop):
    czyx = np.stack([crop, crop[::-1]])  # (2, 8, 64, 80)
    _, stack = _roundtrip(
        tmp_path,
        czyx,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 0.2,
            "PhysicalSizeY": 0.2,
            "PhysicalSizeZ": 0.5,
            "PhysicalSizeXUnit": "µm",
            "Channel": {"Name": ["DAPI", "GFP"]},
        },
    )
    assert stack.shape == (1, 2, 8, 64, 80)
    np.testing.assert_array_equal(stack.data[0].compute(), czyx)
    assert stack.pixel_sizes == {"t": None, "z": 0.5, "y": 0.2, "x": 0.2}
    assert stack.channel_names == ["DAPI", "GFP"]


def test_plain_multipage_tiff_defaults_to_z_and_axes_override(tmp_path, crop):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, crop)
    assert read_image(src).shape == (1, 1, 8, 64, 80)
    assert read_image(src, axes="TYX").shape == (8, 1, 1, 64, 80)


def test_ome_zarr_reader_opens_the_store_with_scale(tmp_path, crop):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    stack = ImageStack(
        da.from_array(crop[None, None]), pixel_sizes={"z": 2.0, "y": 0.5, "x": 0.5}, source="x"
    )
    out = write_image(tmp_path / "s.ome.zarr", stack)
    nodes = list(Reader(parse_url(str(out)))())
    image = nodes[0]
    assert [a["name"] for a in image.metadata["axes"]] == list("tczyx")
    np.testing.assert_array_equal(np.asarray(image.data[0]), crop[None, None])
    scale = image.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == [1.0, 1.0, 2.0, 0.5, 0.5]
    assert zarr.open_array(str(out / "0"), mode="r").chunks == (1, 1, 1, 64, 80)


def test_store_chunks_are_one_plane_and_at_most_1024(tmp_path):
    stack = ImageStack(da.zeros((1, 1, 2, 1100, 50), dtype=np.uint8, chunks=(1, 1, 2, 1100, 50)))
    out = write_image(tmp_path / "c.ome.zarr", stack)
    assert zarr.open_array(str(out / "0"), mode="r").chunks == (1, 1, 1, 1024, 50)


def test_normalization_ranges_are_exact_for_uint16(tmp_path, crop):
    stack = ImageStack(da.from_array(crop[None, None], chunks=(1, 1, 1, 32, 32)))
    out = write_image(tmp_path / "r.ome.zarr", stack, chunks=32)
    ((lo, hi),) = open_store(out).normalization_ranges
    assert (lo, hi) == tuple(np.percentile(crop, (1, 99.8)))


def test_normalization_ranges_of_floats_within_one_bin(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, size=(1, 2, 1, 300, 200)).astype(np.float32)
    out = write_image(tmp_path / "f.ome.zarr", ImageStack(da.from_array(image)), chunks=64)
    ranges = open_store(out).normalization_ranges
    for c, (lo, hi) in enumerate(ranges):
        channel = image[0, c]
        width = (channel.max() - channel.min()) / 65536
        expected = np.percentile(channel, (1, 99.8))
        assert abs(lo - expected[0]) <= width and abs(hi - expected[1]) <= width


def test_existing_output_is_refused_unless_overwrite(tmp_path, crop):
    stack = ImageStack(da.from_array(crop[None, None]))
    out = write_image(tmp_path / "o.ome.zarr", stack)
    with pytest.raises(InputError, match="o.ome.zarr: output already exists"):
        write_image(out, stack)
    write_image(out, stack, overwrite=True)


def test_interrupted_write_leaves_no_store(tmp_path, crop):
    def boom(block, block_info=None):  # some chunks get written, then the crash
        if block_info[0]["chunk-location"][2] == 5:
            raise RuntimeError("simulated crash")
        return block

    data = da.from_array(crop[None, None], chunks=(1, 1, 1, 32, 32))
    data = data.map_blocks(boom, dtype=crop.dtype)
    out = tmp_path / "i.ome.zarr"
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_image(out, ImageStack(data))
    assert list(tmp_path.iterdir()) == []


def test_labels_roundtrip_and_listing(tmp_path, crop, label_crop):
    store = write_image(tmp_path / "l.ome.zarr", ImageStack(da.from_array(crop[None, None])))
    path = write_labels(store, label_crop[None])
    assert path == store / "labels" / "cells"
    labels = read_labels(store)
    assert labels.shape == (1, 1, 8, 64, 80) and labels.dtype == np.uint32
    np.testing.assert_array_equal(labels[0, 0].compute(), label_crop)
    listing = json.loads((store / "labels" / "zarr.json").read_text())
    assert listing["attributes"]["ome"]["labels"] == ["cells"]
    meta = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    assert meta["image-label"]["source"]["image"] == "../../"
    with pytest.raises(InputError, match="output already exists"):
        write_labels(store, label_crop[None])
    write_labels(store, label_crop[None], overwrite=True)
    assert [p.name for p in (store / "labels").iterdir() if p.name.startswith(".")] == []


def test_labels_of_another_shape_are_refused(tmp_path, crop, label_crop):
    store = write_image(tmp_path / "m.ome.zarr", ImageStack(da.from_array(crop[None, None])))
    with pytest.raises(InputError, match="m.ome.zarr: labels shape .* does not match"):
        write_labels(store, label_crop[None, :, :32])
    assert not (store / "labels" / "cells").exists()


def test_negative_labels_are_refused_and_nothing_is_left(tmp_path, crop):
    store = write_image(tmp_path / "n.ome.zarr", ImageStack(da.from_array(crop[None, None])))
    bad = np.zeros((1, 8, 64, 80), np.int32)
    bad[0, 3, 5, 5] = -4
    with pytest.raises(InputError, match="n.ome.zarr: labels contain negative values"):
        write_labels(store, bad)
    assert not (store / "labels" / "cells").exists()
    assert [p.name for p in (store / "labels").iterdir()] == ["zarr.json"]


def test_write_array_roundtrip_keeps_chunks_and_attrs(tmp_path):
    probs = np.random.default_rng(1).random((2, 3, 1, 40, 50)).astype(np.float16)
    out = write_array(
        tmp_path / "p.probs.zarr", probs, name="probs", chunks=(1, 3, 1, 16, 16), attrs={"tile": 16}
    )
    data, attrs = read_array(out, "probs")
    assert data.chunksize == (1, 3, 1, 16, 16)
    np.testing.assert_array_equal(data.compute(), probs)
    assert attrs["tile"] == 16 and "version" in attrs
    with pytest.raises(InputError, match="has no array 'labels'"):
        read_array(out, "labels")


def test_plain_zarr_array_uses_dimension_names(tmp_path, crop):
    path = tmp_path / "plain.zarr"
    array = zarr.create_array(
        str(path),
        shape=(2, 8, 64, 80),
        chunks=(1, 1, 32, 32),
        dtype="u2",
        dimension_names=list("czyx"),
    )
    array[:] = np.stack([crop, crop // 2])
    stack = read_image(path)
    assert stack.shape == (1, 2, 8, 64, 80)
    np.testing.assert_array_equal(stack.data[0, 1].compute(), crop // 2)
    assert read_image(path, axes="TZYX").shape == (2, 1, 8, 64, 80)


def test_ome_zarr_v04_input_keeps_axes_and_pixel_sizes(tmp_path, crop):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image as ome_write_image

    path = tmp_path / "v04.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    ome_write_image(
        crop,
        group,
        axes="zyx",
        fmt=FormatV04(),
        scale={"z": 2.0, "y": 0.4, "x": 0.4},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
        scale_factors=[2],
    )
    stack = read_image(path)
    assert stack.shape == (1, 1, 8, 64, 80)
    np.testing.assert_array_equal(stack.data[0, 0].compute(), crop)
    assert stack.pixel_sizes == {"t": None, "z": 2.0, "y": 0.4, "x": 0.4}
    out = write_image(tmp_path / "canon.ome.zarr", stack)
    assert open_store(out).pixel_sizes["z"] == 2.0


def test_npy_input_is_memory_mapped_and_read(tmp_path, crop):
    path = tmp_path / "stack.npy"
    np.save(path, crop)
    stack = read_image(path)
    assert stack.shape == (1, 1, 8, 64, 80)
    np.testing.assert_array_equal(stack.data[0, 0].compute(), crop)


@pytest.mark.parametrize(
    ("kwargs", "axes", "shape"),
    [
        ({"photometric": "rgb"}, "YXS", (1, 3, 1, 64, 80)),
        ({"photometric": "rgb", "planarconfig": "separate"}, "SYX", (1, 3, 1, 64, 80)),
        ({"byteorder": ">", "photometric": "minisblack"}, "QYX", (1, 1, 3, 64, 80)),
        ({"compression": "zlib", "tile": (32, 32), "photometric": "minisblack"}, "QYX", None),
    ],
)
def test_tiff_layouts_read_region_by_region(tmp_path, crop, kwargs, axes, shape):
    data = crop[:3].astype(np.uint8) if "rgb" in kwargs.values() else crop[:3]
    if axes == "YXS":
        data = np.moveaxis(data, 0, -1)
    path = tmp_path / "layout.tif"
    tifffile.imwrite(path, data, **kwargs)
    stack = read_image(path)
    assert stack.shape == (shape or (1, 1, 3, 64, 80))
    whole = stack.data.compute()
    expected = data if axes != "YXS" else np.moveaxis(data, -1, 0)
    np.testing.assert_array_equal(whole.reshape(expected.shape), expected)
    np.testing.assert_array_equal(stack.data[..., 5:37, 9:50].compute(), whole[..., 5:37, 9:50])


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_rgb_channels_are_named_and_shown_in_their_colours(tmp_path, crop, planar):
    """An RGB TIFF's samples are red, green and blue: named so, and displayed so (omero)."""
    data = np.stack([crop[0], crop[1], crop[2]]).astype(np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data if planar == "separate" else np.moveaxis(data, 0, -1),
                     photometric="rgb", planarconfig=planar)  # fmt: skip
    stack = read_image(path)
    assert stack.channel_names == ["red", "green", "blue"]
    out = write_image(tmp_path / "rgb.ome.zarr", stack)
    omero = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["omero"]
    assert [c["color"] for c in omero["channels"]] == ["FF0000", "00FF00", "0000FF"]
    two = write_image(tmp_path / "two.ome.zarr", ImageStack(da.from_array(data[None, :2, None])))
    colours = json.loads((two / "zarr.json").read_text())["attributes"]["ome"]["omero"]
    assert [c["color"] for c in colours["channels"]] == ["00FF00", "FF00FF"]  # ch0, ch1


def test_ome_tiff_channel_colours_are_shown_unless_they_do_not_tell_channels_apart(tmp_path, crop):
    """OME ``Color`` (signed RGBA) becomes the store's display colour; colours the same for
    every channel (white, as files without display settings record) give way to a palette."""
    data = np.stack([crop[0], crop[1] // 2])
    omero = {}
    for name, colours in (("dapi_gfp", [0x0033FFFF, 0x07FF00FF - 2**32]), ("white", [-1, -1])):
        path = tmp_path / f"{name}.ome.tif"
        tifffile.imwrite(path, data, ome=True, metadata={
            "axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"], "Color": colours}})  # fmt: skip
        stack = read_image(path)
        out = write_image(tmp_path / f"{name}.ome.zarr", stack)
        channels = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["omero"]
        omero[name] = [c["color"] for c in channels["channels"]]
        assert open_store(out).channel_colours == stack.channel_colours
    assert omero == {"dapi_gfp": ["0033FF", "07FF00"], "white": ["00FF00", "FF00FF"]}


def test_fiji_composite_shows_its_channels_in_their_lookup_table_colours(tmp_path, crop):
    luts = np.zeros((2, 3, 256), np.uint8)
    luts[0, 2] = luts[1, 0] = luts[1, 2] = np.arange(256)  # blue, magenta
    path = tmp_path / "composite.tif"
    data = np.stack([crop[0], crop[1]])
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "CYX", "LUTs": list(luts)})
    out = write_image(tmp_path / "composite.ome.zarr", read_image(path))
    channels = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["omero"]
    assert [c["color"] for c in channels["channels"]] == ["0000FF", "FF00FF"]


def test_int16_input_keeps_dtype_and_exact_ranges(tmp_path, crop):
    signed = crop.astype(np.int32) // 4 - 500
    stack = ImageStack(da.from_array(signed.astype(np.int16)[None, None], chunks=(1, 1, 2, 32, 32)))
    out = write_image(tmp_path / "s.ome.zarr", stack)
    stored = open_store(out)
    assert stored.dtype == np.int16
    assert stored.normalization_ranges[0] == tuple(np.percentile(signed, (1, 99.8)))


def test_demo_images_resolve_with_their_axes():
    assert read_image("demo:nuclei_timelapse").shape == (30, 1, 1, 511, 511)
    assert read_image("demo:nuclei_3d").shape == (1, 1, 60, 256, 256)
    labels = read_image("demo:nuclei_3d_labels")
    assert labels.shape == (1, 1, 60, 256, 256) and labels.dtype == np.uint32


def test_zarr_input_is_not_modified(tmp_path, crop):
    import hashlib

    path = tmp_path / "in.zarr"
    zarr.create_array(str(path), shape=crop.shape, chunks=(1, 32, 32), dtype="u2")[:] = crop

    def digest():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [
            (p.name, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in files
        ]

    before = digest()
    write_image(tmp_path / "out.ome.zarr", read_image(path))
    assert digest() == before


def test_large_images_get_a_pyramid_that_ome_zarr_reads(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    image = np.random.default_rng(2).integers(0, 4000, (1, 1, 1, 2100, 1100), dtype=np.uint16)
    stack = ImageStack(da.from_array(image, chunks=(1, 1, 1, 700, 1100)), pixel_sizes={"x": 0.5})
    out = write_image(tmp_path / "p.ome.zarr", stack)
    node = next(iter(Reader(parse_url(str(out)))()))
    assert [d.shape[-2:] for d in node.data] == [(2100, 1100), (1050, 550), (525, 275)]
    level1 = np.asarray(node.data[1])[0, 0, 0]
    expected = image[0, 0, 0].reshape(1050, 2, 550, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(level1, np.rint(expected).astype(np.uint16))
    meta = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    scales = [d["coordinateTransformations"][0]["scale"][-1] for d in meta["datasets"]]
    assert scales == [0.5, 1.0, 2.0]
    assert open_store(out).shape == (1, 1, 1, 2100, 1100)  # stages read level 0
    assert write_image(tmp_path / "n.ome.zarr", stack, pyramid=0)
    assert not (tmp_path / "n.ome.zarr" / "1").exists()


def test_store_and_label_metadata_is_what_ome_zarr_writes_and_is_valid(tmp_path, crop):
    """grunet builds the OME-NGFF metadata itself (no job imports ome-zarr); it must equal what
    ome-zarr's own writer makes from the same datasets and axes (which that writer checks), and
    the image, its label image and the labels group must validate with ome-zarr-models."""
    import warnings

    from ome_zarr.format import FormatV05
    from ome_zarr_models.v05 import Image, ImageLabel, Labels

    with warnings.catch_warnings():  # ome_zarr.writer's import warns about its deprecated Scaler
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import add_metadata, write_multiscales_metadata

    two_channels = np.stack([crop[:2], crop[:2] // 2])[None]  # (1, 2, 2, 64, 80)
    stack = ImageStack(
        da.from_array(two_channels), pixel_sizes={"z": 2.0, "y": 0.5, "x": 0.5}, source="x"
    )
    out = write_image(tmp_path / "m.ome.zarr", stack, pyramid=1)
    extras = {"colors": [{"label-value": 1, "rgba": [255, 0, 0, 255]}]}
    labels = write_labels(out, np.zeros((1, 2, 64, 80), np.uint32), image_label=extras)

    def ome(path: Path) -> dict:
        return json.loads((path / "zarr.json").read_text())["attributes"]["ome"]

    ours, our_labels = ome(out), ome(labels)
    assert len(ours["multiscales"][0]["datasets"]) == 2
    assert [c["label"] for c in ours["omero"]["channels"]] == ["ch0", "ch1"]
    image_label = {"version": "0.5", "source": {"image": "../../"}, **extras}
    references = {
        "image": (ours, {"omero": ours["omero"]}),
        "labels": (our_labels, {"image-label": image_label}),
    }
    for name, (written, extra) in references.items():
        reference = zarr.open_group(str(tmp_path / name), zarr_format=3)
        multiscale = written["multiscales"][0]
        write_multiscales_metadata(reference, datasets=multiscale["datasets"], fmt=FormatV05(),
                                   axes=multiscale["axes"], name=multiscale["name"])  # fmt: skip
        add_metadata(reference, extra, fmt=FormatV05())
        assert reference.attrs["ome"] == written, name
    Image.from_zarr(zarr.open_group(str(out), mode="r"))
    ImageLabel.from_zarr(zarr.open_group(str(labels), mode="r"))
    Labels.from_zarr(zarr.open_group(str(out / "labels"), mode="r"))
    assert ome(out / "labels") == {"version": "0.5", "labels": ["cells"]}


def test_labels_of_a_pyramid_image_get_its_levels_with_existing_ids(tmp_path):
    """The labels spec (and napari, which pairs levels up) wants a label image with the image's
    resolutions; a coarser level holds ids picked from the finer one, never an average of two."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    image = np.zeros((1, 1, 1, 2100, 1100), np.uint8)
    out = write_image(tmp_path / "p.ome.zarr", ImageStack(da.from_array(image)))
    labels = np.random.default_rng(3).integers(0, 5, (1, 1, 2100, 1100), dtype=np.uint32)
    labels[..., ::2, ::2] = 7  # odd ids only where level 1 never looks
    write_labels(out, labels)
    levels = [zarr.open_array(str(out / "labels" / "cells" / str(k)), mode="r") for k in range(3)]
    assert [a.shape[-2:] for a in levels] == [(2100, 1100), (1050, 550), (525, 275)]
    np.testing.assert_array_equal(levels[0][:], labels[:, None])
    assert np.unique(levels[1][:]).tolist() == [7] and np.unique(levels[2][:]).tolist() == [7]
    label_node = [n for n in Reader(parse_url(str(out / "labels" / "cells")))()][0]
    assert len(label_node.data) == 3


def test_readers_do_not_import_the_store_module():
    """One import direction only: the store (writing) uses the readers, never the reverse."""
    import ast

    import grunet.io.readers
    import grunet.io.vendor

    for module in (grunet.io.readers, grunet.io.vendor):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(name and name.startswith("grunet.io.store") for name in imported)
        assert "grunet.io" not in imported  # the package re-exports the store


def test_ome_tiff_negative_pixel_size_is_stored_unknown_with_a_warning(tmp_path, crop):
    path = tmp_path / "flipped.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeZ": -2.0, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5}
    tifffile.imwrite(path, np.stack([crop[0], crop[0]]), metadata=meta)
    stack = read_image(path)
    assert stack.pixel_sizes["z"] is None and stack.pixel_sizes["y"] == pytest.approx(0.5)
    assert len(stack.warnings) == 1
    assert stack.warnings[0].startswith(f"{path}: ") and "z pixel size -2" in stack.warnings[0]
