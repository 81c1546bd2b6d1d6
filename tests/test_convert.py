"""``grunet convert``: inputs → canonical OME-Zarr stores, inputs untouched, outputs atomic."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tifffile

from grunet.cli import main
from grunet.io import open_store


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def inputs(tmp_path, nuclei_timelapse, nuclei_3d):
    """Real crops: a TYX plain TIFF, a ZYX ImageJ stack, a 2-channel OME-TIFF."""
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "movie.tif", nuclei_timelapse[:5, :96, :128])
    tifffile.imwrite(
        folder / "stack.tif",
        nuclei_3d[0][20:26, :64, :64],
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZYX", "spacing": 0.8, "unit": "micron"},
    )
    two = np.stack([nuclei_3d[0][30, :64, :80], nuclei_3d[0][31, :64, :80]])
    tifffile.imwrite(
        folder / "two.ome.tif",
        two,
        ome=True,
        metadata={"axes": "CYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3},
    )
    return folder


def test_convert_folder_of_mixed_tiffs(tmp_path, inputs, capsys):
    files = sorted(inputs.iterdir())
    before = {p.name: _sha256(p) for p in files}
    out = tmp_path / "out"
    assert main(["convert", *map(str, files), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "movie.ome.zarr",
        "stack.ome.zarr",
        "two.ome.zarr",
    ]
    assert {p.name: _sha256(p) for p in files} == before  # inputs never modified
    stack = open_store(out / "stack.ome.zarr")
    assert stack.shape == (1, 1, 6, 64, 64)
    assert stack.pixel_sizes == {"t": None, "z": 0.8, "y": 0.5, "x": 0.5}
    two = open_store(out / "two.ome.zarr")
    assert two.shape == (1, 2, 1, 64, 80)
    assert two.pixel_sizes["x"] == pytest.approx(0.3)
    movie = open_store(out / "movie.ome.zarr")
    assert movie.shape == (1, 1, 5, 96, 128)  # a plain 3D stack is read as Z ...
    printed = capsys.readouterr()
    assert str(out / "two.ome.zarr") in printed.out
    assert "movie.ome.zarr" in printed.err  # progress bar on stderr


def test_convert_options_name_axes_channels_pixel_size(tmp_path, inputs):
    out = tmp_path / "out"
    args = ["convert", str(inputs / "movie.tif"), "-o", str(out), "--name", "nuclei"]
    args += ["--axes", "TYX", "--channel-names", "H2B", "--pixel-size", "0.65,0.65"]
    assert main(args) == 0
    stack = open_store(out / "nuclei.ome.zarr")
    assert stack.shape == (5, 1, 1, 96, 128)  # ... unless --axes says it is a time series
    assert stack.channel_names == ["H2B"]
    assert stack.pixel_sizes["y"] == stack.pixel_sizes["x"] == 0.65
    assert stack.attrs["convert"]["axes"] == "TYX"


def test_convert_refuses_existing_output_unless_overwrite(tmp_path, inputs, capsys):
    out = tmp_path / "out"
    src = str(inputs / "movie.tif")
    assert main(["convert", src, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["convert", src, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("movie.ome.zarr: output already exists; pass --overwrite to replace it")
    assert main(["convert", src, "-o", str(out), "--overwrite"]) == 0


def test_convert_reports_bad_input_before_writing_anything(tmp_path, inputs, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    assert main(["convert", str(inputs / "movie.tif"), str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and err[0].startswith("grunet convert: error:")
    assert not out.exists() or list(out.iterdir()) == []


def test_convert_nan_image_leaves_no_store(tmp_path, capsys):
    data = np.ones((16, 16), np.float32)
    data[3, 3] = np.nan
    src = tmp_path / "nan.tif"
    tifffile.imwrite(src, data)
    out = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(out)]) == 2
    assert "1 of 256 pixel values are NaN" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # not even a temporary sibling


def test_convert_refuses_inputs_with_the_same_name(tmp_path, inputs, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "movie.tif").write_bytes((inputs / "movie.tif").read_bytes())
    args = ["convert", str(inputs / "movie.tif"), str(other / "movie.tif"), "-o", str(tmp_path)]
    assert main(args) == 2
    assert "has the same name as" in capsys.readouterr().err


def test_convert_wrong_channel_name_count(tmp_path, inputs, capsys):
    args = ["convert", str(inputs / "two.ome.tif"), "-o", str(tmp_path / "o")]
    assert main([*args, "--channel-names", "A,B,C"]) == 2
    assert "two.ome.tif: 3 channel names given for 2 channel(s)" in capsys.readouterr().err


def test_convert_demo_image(tmp_path):
    assert main(["convert", "demo:nuclei_3d", "-o", str(tmp_path)]) == 0
    stack = open_store(tmp_path / "nuclei_3d.ome.zarr")
    assert stack.shape == (1, 1, 60, 256, 256)
    assert stack.attrs["source"].endswith("nuclei.tif")


def test_killed_conversion_leaves_no_store_and_a_rerun_cleans_up(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    out.mkdir()
    script = f"""
import time, dask.array as da, numpy as np
from grunet.io import ImageStack, write_image
def slow(block):
    time.sleep(0.2)
    return block
data = da.ones((1, 1, 40, 64, 64), dtype=np.uint8, chunks=(1, 1, 1, 64, 64)).map_blocks(slow)
write_image({str(out / "x.ome.zarr")!r}, ImageStack(data))
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not any((p / "0").exists() for p in out.iterdir()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # some chunks written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = list(out.iterdir())
    assert [p.name.startswith(".x.ome.zarr.tmp-") for p in leftovers] == [True]
    assert not (out / "x.ome.zarr").exists()  # nothing a rerun would trust
    from grunet.io import ImageStack, open_store, write_image

    write_image(out / "x.ome.zarr", ImageStack(np.ones((1, 1, 2, 8, 8), np.uint8)))
    assert [p.name for p in out.iterdir()] == ["x.ome.zarr"]  # the dead writer's temp is gone
    assert open_store(out / "x.ome.zarr").shape == (1, 1, 2, 8, 8)


def test_convert_pyramid_levels_option(tmp_path, inputs):
    src = str(inputs / "movie.tif")
    assert main(["convert", src, "-o", str(tmp_path), "--pyramid-levels", "2"]) == 0
    store = tmp_path / "movie.ome.zarr"
    assert (store / "1").is_dir() and (store / "2").is_dir() and not (store / "3").exists()
    assert open_store(store).attrs["convert"]["pyramid"] == 2
