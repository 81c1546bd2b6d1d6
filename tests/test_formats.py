"""Microscope vendor files (CZI, ND2, LIF, DV) through bioio, and scenes as samples.

Real files of ../shared/data/formats (skipped where absent; bioio and its plugins come with the
``formats`` extra, skipped where not installed). Multi-series TIFFs are written here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr

from grunet.errors import InputError, MetadataWarning
from grunet.io import open_store, read_image
from grunet.io.convert import convert, input_samples
from grunet.io.readers import list_scenes
from tests.conftest import shared_dataset

pytestmark = pytest.mark.filterwarnings("ignore:use_aicspylibczi=False:DeprecationWarning")

VENDOR_FILES = [
    "tile-1x1_time-1_z-1_channel-Phase-EGFP-Cy3_binning-4x4_area-1600-1400_offset-96-24_bitdepth-12.czi",
    "CellDivision_T3_Z6_CH1_X300_Y200_DCV_ZSTD.czi",
    "testCziMultipleScenes.czi",
    "s_1_t_1_c_1_z_1.czi",
    "example-multichannel.nd2",
    "example-timelapse.nd2",
    "example-zstack.nd2",
    "dims_z5t3c2y32x32.nd2",
    "PR2729_frameOrderCombinedScanTypes.lif",
]
PLUGINS = {"czi": "bioio_czi", "nd2": "bioio_nd2", "lif": "bioio_lif", "dv": "bioio_dv"}


def _vendor(name: str):
    pytest.importorskip("bioio", reason='needs the formats extra: pip install "grunet[formats]"')
    pytest.importorskip(PLUGINS[name.rsplit(".", 1)[1]])
    return shared_dataset("formats") / name


def _grunet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grunet", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("name", VENDOR_FILES)
def test_every_scene_of_a_vendor_file_converts_to_the_pixels_bioio_reads(name, tmp_path):
    import bioio

    path = _vendor(name)
    reference = bioio.BioImage(str(path))
    if name.endswith(".czi") and len(reference.scenes) > 1:
        # bioio-czi's default mode repeats the last scene's pixels in every scene of this file
        # (its own aicspylibczi and pylibCZIrw libraries read the scenes apart): compare with
        # its pylibCZIrw mode, which grunet uses for multi-scene CZIs.
        reference = bioio.BioImage(str(path), use_aicspylibczi=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetadataWarning)
        stores = convert([path], tmp_path)
    assert len(stores) == len(reference.scenes)
    for k, store in enumerate(stores):
        reference.set_scene(k)
        expected = reference.get_image_data("TCZYX")
        stack = open_store(store)
        assert stack.shape == expected.shape
        assert stack.dtype == expected.dtype
        np.testing.assert_array_equal(stack.data.compute(), expected)
        assert stack.channel_names == [str(c) for c in reference.channel_names]
        sizes = reference.physical_pixel_sizes
        for axis, value in (("z", sizes.Z), ("y", sizes.Y), ("x", sizes.X)):
            kept = value if value is not None and value > 0 else None
            assert stack.pixel_sizes[axis] == pytest.approx(kept)


def test_each_scene_of_a_multi_scene_czi_is_its_own_sample(tmp_path):
    path = _vendor("testCziMultipleScenes.czi")
    assert list_scenes(path) == ["TR1", "P1"]
    samples = input_samples(path)
    assert [s.name for s in samples] == ["testCziMultipleScenes_s0", "testCziMultipleScenes_s1"]
    stores = convert([path], tmp_path)
    attrs = [dict(zarr.open_group(str(s), mode="r").attrs["grunet"]) for s in stores]
    assert [a["scene"] for a in attrs] == [{"index": 0, "name": "TR1"}, {"index": 1, "name": "P1"}]
    first, second = (open_store(s).data.compute() for s in stores)
    assert not np.array_equal(first, second)  # two positions, not one read twice


def test_one_scene_is_chosen_by_index_or_name(tmp_path):
    path = _vendor("testCziMultipleScenes.czi")
    by_name = read_image(path, scene="P1").data.compute()
    by_index = read_image(path, scene=1).data.compute()
    np.testing.assert_array_equal(by_name, by_index)
    (store,) = convert([path], tmp_path, scene="P1", name="well_b2")
    assert store.name == "well_b2.ome.zarr"
    np.testing.assert_array_equal(open_store(store).data.compute(), by_index)
    with pytest.raises(InputError, match=r"has no scene 'P9'.*0 \(TR1\), 1 \(P1\)"):
        read_image(path, scene="P9")


def test_negative_pixel_size_warns_naming_the_file_and_is_stored_unknown(tmp_path):
    path = _vendor("PR2729_frameOrderCombinedScanTypes.lif")
    with pytest.warns(MetadataWarning, match=r"PR2729.*z pixel size -6\.2\d* µm.*unknown"):
        (store,) = convert([path], tmp_path)
    stack = open_store(store)
    assert stack.pixel_sizes["z"] is None
    assert stack.pixel_sizes["y"] == pytest.approx(3.968, abs=1e-3)
    attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    assert "-6.2" in attrs["grunet"]["metadata_warnings"][0]
    ome_axes = attrs["ome"]["multiscales"][0]["axes"]
    assert "unit" not in ome_axes[2]  # z: no physical unit claimed


def test_time_interval_and_z_step_reach_the_store(tmp_path):
    path = _vendor("CellDivision_T3_Z6_CH1_X300_Y200_DCV_ZSTD.czi")
    (store,) = convert([path], tmp_path)
    sizes = open_store(store).pixel_sizes
    assert sizes["t"] == pytest.approx(60.0, abs=0.1)  # the file says 60.005 s
    assert sizes["z"] == pytest.approx(0.32)
    multiscale = dict(zarr.open_group(str(store), mode="r").attrs)["ome"]["multiscales"][0]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[0] == pytest.approx(60.0, abs=0.1)


def test_channel_colours_of_an_nd2_file_reach_the_store(tmp_path):
    """The acquisition's channel colours (DAPI blue, FITC green, ...) are what viewers show."""
    path = _vendor("example-multichannel.nd2")
    (store,) = convert([path], tmp_path)
    omero = dict(zarr.open_group(str(store), mode="r").attrs)["ome"]["omero"]["channels"]
    shown = {c["label"]: c["color"] for c in omero}
    assert shown == {"Mono": "FFFFFF", "DAPI": "0033FF", "FITC BP": "07FF00", "TRITC BP": "FFBF00"}
    assert open_store(store).channel_colours == list(shown.values())  # kept for re-conversion


# ------------------------------------------------------------------------------- bad input
def _truncated(tmp_path, name: str, fraction: float = 0.6):
    source = _vendor(name)
    data = source.read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize(
    "name",
    [
        "testCziMultipleScenes.czi",
        "dims_z5t3c2y32x32.nd2",
        "PR2729_frameOrderCombinedScanTypes.lif",
    ],
)
def test_truncated_vendor_file_fails_convert_with_one_line_and_writes_nothing(name, tmp_path):
    path = _truncated(tmp_path, name)
    out = tmp_path / "out"
    result = _grunet("convert", str(path), "-o", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"grunet convert: error: {path}: ")
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_unreadable_dv_fails_check_naming_the_file(tmp_path):
    path = _vendor("toxo.dv")
    result = _grunet("check", str(path))
    assert result.returncode == 2
    assert result.stdout.strip().startswith(f"{path}: cannot read")
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("blocked", "suffix"), [("bioio", ".czi"), ("bioio_nd2", ".nd2"), ("bioio_lif", ".lif")]
)
def test_missing_plugin_error_names_the_file_and_the_extra(blocked, suffix, tmp_path):
    pytest.importorskip("bioio")
    name = next(n for n in VENDOR_FILES if n.endswith(suffix))
    path = shared_dataset("formats") / name
    script = (
        f"import sys; sys.modules[{blocked!r}] = None\n"  # as if the package were not installed
        "from grunet.cli import main\n"
        f"sys.exit(main(['convert', {str(path)!r}, '-o', {str(tmp_path / 'out')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert f"{path}: {suffix} files need bioio" in result.stderr
    assert 'pip install "grunet[formats]"' in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- multi-series TIFF
def _two_series_tiff(path, ome: bool):
    rng = np.random.default_rng(3)
    first = rng.integers(0, 4000, (3, 40, 50), dtype=np.uint16)
    second = rng.integers(0, 4000, (2, 30, 20), dtype=np.uint16)
    with tifffile.TiffWriter(path, ome=ome) as tif:
        meta = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5} if ome else {}
        tif.write(
            first, photometric="minisblack", metadata={**meta, "Name": "well_a1"} if ome else None
        )
        tif.write(
            second, photometric="minisblack", metadata={**meta, "Name": "well_a2"} if ome else None
        )
    return first, second


@pytest.mark.parametrize("ome", [False, True])
def test_every_series_of_a_multi_series_tiff_is_its_own_sample(ome, tmp_path):
    path = tmp_path / ("plate.ome.tif" if ome else "plate.tif")
    first, second = _two_series_tiff(path, ome)
    assert list_scenes(path) == (["well_a1", "well_a2"] if ome else ["series0", "series1"])
    stores = convert([path], tmp_path / "out")
    assert [s.name for s in stores] == ["plate_s0.ome.zarr", "plate_s1.ome.zarr"]
    np.testing.assert_array_equal(open_store(stores[0]).data.compute()[0, 0], first)
    np.testing.assert_array_equal(open_store(stores[1]).data.compute()[0, 0], second)
    if ome:
        assert open_store(stores[1]).pixel_sizes["x"] == pytest.approx(0.5)


def test_check_reports_every_scene_of_a_multi_series_tiff(tmp_path):
    path = tmp_path / "plate.tif"
    _two_series_tiff(path, ome=False)
    result = _grunet("check", "-v", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{path} (scene series0): ok, TCZYX (1, 1, 3, 40, 50)" in result.stdout
    assert f"{path} (scene series1): ok, TCZYX (1, 1, 2, 30, 20)" in result.stdout


# ------------------------------------------------------------------- run and the workflow
MIXED = {
    "czi": "testCziMultipleScenes.czi",  # 2 scenes, 2 channels
    "nd2": "dims_z5t3c2y32x32.nd2",  # T3 C2 Z5
    "lif": "PR2729_frameOrderCombinedScanTypes.lif",  # T2 C2 Z3, negative z step
}


def _mixed_inputs(tmp_path, nuclei_timelapse):
    """The vendor files (read in place) and a TIFF crop of the real demo time-lapse."""
    paths = {kind: _vendor(name) for kind, name in MIXED.items()}
    tiff = tmp_path / "data" / "movie.tif"
    tiff.parent.mkdir()
    tifffile.imwrite(tiff, nuclei_timelapse[:2, 200:296, 200:296], photometric="minisblack")
    return paths, tiff


def test_grunet_run_segments_a_mix_of_czi_nd2_lif_and_tiff(tmp_path, nuclei_timelapse):
    import pandas as pd

    paths, tiff = _mixed_inputs(tmp_path, nuclei_timelapse)
    out = tmp_path / "out"
    args = [*map(str, paths.values()), str(tiff), "-o", str(out), "--channels", "0"]
    # The vendor test files are 32-px noise: an estimated scale would blow the 3D stacks up
    # ×8 (minutes); the nucleus scale is given, as a user would for such files.
    args += ["--diameter", "19"]
    result = _grunet("run", *args, "--axes", "TYX", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = pd.read_csv(out / "counts.csv")
    samples = {
        "testCziMultipleScenes_s0": 1,
        "testCziMultipleScenes_s1": 1,
        "dims_z5t3c2y32x32": 3,
        "PR2729_frameOrderCombinedScanTypes": 2,
        "movie": 2,
    }
    assert counts.groupby("sample")["t"].nunique().to_dict() == samples
    cells = pd.read_parquet(out / "cells" / "PR2729_frameOrderCombinedScanTypes.parquet")
    assert set(cells["z"]) <= {0, 1, 2}
    assert "mean_intensity_Green" in cells.columns and "mean_intensity_Red" in cells.columns
    meta = json.loads(
        pq.read_schema(out / "cells" / "dims_z5t3c2y32x32.parquet").metadata[b"grunet"]
    )
    assert meta["channel_names"] == ["Widefield Green", "Widefield Red"]
    assert meta["pixel_sizes"]["z"] == pytest.approx(1.0)
    stores = sorted(out.glob("*.ome.zarr"))
    tables = sorted((out / "cells").glob("*.parquet"))
    report = out / "report.html"
    args = ["--counts", str(out / "counts.csv"), "-o", str(report), "--frames", "1"]
    result = _grunet("report", *args, "--tables", *map(str, tables), "--images", *map(str, stores))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    assert "scene 1: P1" in html  # the multi-scene CZI's second scene, by name
    assert "z pixel size -6.22761 µm" in html  # the LIF's dropped metadata, reported
    assert "Widefield Green, Widefield Red" in html


def _workflow(workdir, *args, timeout=900):
    from tests.test_workflow import snakemake

    return snakemake(workdir, *args, timeout=timeout)


def _vendor_experiment(tmp_path, nuclei_timelapse):
    from tests.test_workflow import model_path

    paths, tiff = _mixed_inputs(tmp_path, nuclei_timelapse)
    (tmp_path / "config").mkdir()
    sheet = [
        "sample\tpath\tscene\tchannels\taxes\tcondition",
        f"plate\t{paths['czi']}\t\tDAPI\t\tczi",
        f"dims\t{paths['nd2']}\t\t0\t\tnd2",
        f"tiles\t{paths['lif']}\tTileScan_001\tRed\t\tlif",
        "movie\tdata/movie.tif\t\t\tTYX\ttiff",
    ]
    (tmp_path / "config" / "samples.tsv").write_text("\n".join(sheet) + "\n")
    config = {
        "samples": "config/samples.tsv",
        "model": repr(model_path(tmp_path.parent)),
        "predict": "{threads: 1}",
        "report": "{frames: 1}",
    }
    (tmp_path / "config" / "config.yaml").write_text(
        "".join(f"{k}: {v}\n" for k, v in config.items())
    )
    return tmp_path


def test_workflow_makes_every_scene_of_a_multi_scene_file_a_sample(tmp_path, nuclei_timelapse):
    root = _vendor_experiment(tmp_path, nuclei_timelapse)
    result = _workflow(root, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    for sample in ("plate_s0", "plate_s1", "dims", "tiles", "movie"):
        assert f"results/images/{sample}.ome.zarr" in result.stdout
    assert "results/images/plate.ome.zarr" not in result.stdout


@pytest.mark.slow
def test_workflow_runs_a_sheet_mixing_czi_nd2_lif_and_tiff(tmp_path, nuclei_timelapse):
    import pandas as pd

    root = _vendor_experiment(tmp_path, nuclei_timelapse)
    result = _workflow(root)
    assert result.returncode == 0, result.stderr[-4000:]
    counts = pd.read_csv(root / "results" / "counts.csv")
    assert set(counts["sample"]) == {"plate_s0", "plate_s1", "dims", "tiles", "movie"}
    assert set(counts["condition"]) == {"czi", "nd2", "lif", "tiff"}
    tiles = zarr.open_group(str(root / "results" / "images" / "tiles.ome.zarr"), mode="r")
    assert dict(tiles.attrs)["grunet"]["pixel_sizes"]["z"] is None  # negative in the file
    assert (root / "results" / "report.html").is_file()
