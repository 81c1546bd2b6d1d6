"""What a ``grunet`` process loads: every workflow job is one, so its fixed cost counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tifffile

LEAN_IMPORT = """
import json, sys
from grunet.cli import lean_dask
lean_dask.install()
import dask.array as da
loaded = {name: name in sys.modules for name in ("xarray", "scipy.fftpack")}
import scipy.fftpack  # still importable once dask.array is loaded
try:
    import xarray
    later = xarray.DataArray([1, 2]).sum().item() == 3
except ImportError:
    later = None  # not installed here
x = da.from_array([[1.0, 2.0], [3.0, 4.0]], chunks=1)
print(json.dumps({"loaded": loaded, "xarray_later": later, "sum": float(x.sum().compute())}))
"""


def test_the_command_loads_dask_array_without_xarray_which_still_imports_afterwards():
    done = subprocess.run([sys.executable, "-c", LEAN_IMPORT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["loaded"] == {"xarray": False, "scipy.fftpack": False}
    assert result["xarray_later"] in (True, None)  # bioio (vendor formats) imports it later
    assert result["sum"] == 10.0


RUN_AND_REPORT = """
import atexit, json, os, sys
watched = os.environ.get("WATCHED", "distributed,xarray").split(",")
atexit.register(lambda: print(json.dumps({m: m in sys.modules for m in watched})))
sys.argv = ["grunet", *sys.argv[1:]]
from grunet.cli import console
console()
"""


def test_grunet_run_imports_neither_distributed_xarray_nor_ome_zarr(tmp_path, nuclei_timelapse):
    """Without a dask Client there is none to look for (0.14 s), nor any xarray to recognise;
    the stores' metadata is written without ome-zarr (0.54 s)."""
    import os

    image = tmp_path / "frame.tif"
    tifffile.imwrite(image, nuclei_timelapse[0, :192, :192])
    argv = ["run", str(image), "-o", str(tmp_path / "out"), "--device", "cpu"]
    env = {**os.environ, "WATCHED": "distributed,xarray,ome_zarr"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "counts.csv").is_file()
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "distributed": False,
        "xarray": False,
        "ome_zarr": False,
    }


def test_no_workflow_job_imports_ome_zarr(tmp_path, nuclei_timelapse):
    """ome-zarr's import (its pydantic models, scikit-image's transforms: 0.54 s) would be a
    fixed cost of every job; grunet writes and reads the OME-NGFF metadata itself (test_io
    checks it against ome-zarr), so no stage of the workflow loads it."""
    import os

    image = tmp_path / "frame.tif"
    tifffile.imwrite(image, nuclei_timelapse[0, :128, :128])
    store, probs = tmp_path / "frame.ome.zarr", tmp_path / "frame.probs.zarr"
    env = {**os.environ, "WATCHED": "ome_zarr"}
    jobs = [
        ["convert", str(image), "-o", str(tmp_path)],
        ["predict", str(store), "-o", str(probs), "--diameter", "35", "--no-progress"],
        ["segment", str(probs), "--image", str(store)],
        ["measure", str(store), "-o", str(tmp_path / "cells.parquet")],
    ]
    for argv in jobs:
        done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *argv], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.splitlines()[-1]) == {"ome_zarr": False}, argv
    assert (tmp_path / "cells.parquet").is_file()


@pytest.mark.parametrize("scheduler", ["sync", "threads", None])
def test_dask_results_are_the_same_with_grunets_schedulers(scheduler):
    """The schedulers grunet passes are the ones dask would pick, so results do not change."""
    import dask.array as da
    import numpy as np

    from grunet.parallel import default_scheduler, synchronous_scheduler, threaded_scheduler

    ours = {"sync": synchronous_scheduler, "threads": threaded_scheduler}.get(
        scheduler, default_scheduler
    )()
    x = da.from_array(np.arange(10_000, dtype=np.float64).reshape(100, 100), chunks=17)
    y = (x.rechunk(25) * 2).sum(axis=0)
    np.testing.assert_array_equal(y.compute(scheduler=ours), y.compute(scheduler=scheduler))


def test_a_scheduler_set_in_dasks_config_still_decides():
    import dask

    from grunet.parallel import default_scheduler, rechunk_method

    with dask.config.set(scheduler="synchronous", **{"array.rechunk.method": "tasks"}):
        assert default_scheduler() is None  # dask picks the configured one, as without grunet
        assert rechunk_method() is None
