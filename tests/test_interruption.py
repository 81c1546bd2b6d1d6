"""Killed stages leave nothing a rerun would trust; reruns give identical bytes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from grunet.atomic import stale_temporaries
from grunet.cli import main
from grunet.io import read_labels

PROGRESS = re.compile(r"\|\s*([1-9]\d*)/(\d+)")  # a tqdm bar with at least one item done


def run_stage(args: list[str]) -> None:
    assert main([str(a) for a in args]) == 0


def partly_written(final: Path) -> bool:
    """A temporary sibling of ``final`` holding at least one written file."""
    if not final.parent.is_dir():
        return False
    temporaries = final.parent.glob(f".{final.name}.tmp-*")
    return any(t.is_file() or any(p.is_file() for p in t.rglob("*")) for t in temporaries)


def kill_mid_way(args: list[str], final: Path, log: Path, timeout: float = 300) -> bool:
    """Start `grunet ARGS`; SIGKILL it once it has done some work; True if it was killed.

    Work done = its progress bar counted an item, or its output's temporary holds a file.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRUNET_PROGRESS": "1"}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "grunet", *map(str, args)], stderr=err, env=env
        )
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        match = PROGRESS.search(log.read_text(errors="replace"))
        if (match and int(match.group(1)) < int(match.group(2))) or partly_written(final):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


@pytest.fixture(scope="module")
def movie(tmp_path_factory, nuclei_timelapse) -> Path:
    path = tmp_path_factory.mktemp("input") / "movie.tif"
    tifffile.imwrite(path, nuclei_timelapse[:6, :192, :192])
    return path


def pipeline(movie: Path, out: Path) -> dict[str, Path]:
    """Run convert → predict → segment → measure in-process; return the outputs.

    Blocks as in the reruns below: label ids and the table's row order follow the block grid.
    """
    paths = {
        "store": out / "movie.ome.zarr",
        "probs": out / "movie.probs.zarr",
        "table": out / "cells" / "movie.parquet",
    }
    run_stage(["convert", movie, "--axes", "TYX", "-o", out])
    run_stage(["predict", paths["store"], "-o", paths["probs"], "--device", "cpu"])
    run_stage(["segment", paths["probs"], "--image", paths["store"], "--block", "32"])
    run_stage(["measure", paths["store"], "-o", paths["table"], "--block", "32"])
    return paths


@pytest.fixture(scope="module")
def reference(movie, tmp_path_factory) -> dict[str, Path]:
    return pipeline(movie, tmp_path_factory.mktemp("reference"))


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_same_input_gives_byte_identical_labels_and_tables(movie, reference, tmp_path):
    again = pipeline(movie, tmp_path)
    assert np.array_equal(read_labels(again["store"]), read_labels(reference["store"]))
    assert same_bytes(again["table"].with_suffix(".csv"), reference["table"].with_suffix(".csv"))
    assert same_bytes(again["table"], reference["table"]) or _same_parquet_data(
        again["table"], reference["table"]
    )


def _same_parquet_data(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    return pq.read_table(a).equals(pq.read_table(b))


@pytest.mark.parametrize("stage", ["predict", "segment", "measure"])
def test_killed_stage_is_redone_by_a_rerun_with_identical_tables(stage, movie, reference, tmp_path):
    out = tmp_path / "out"
    store, probs, table = out / "movie.ome.zarr", out / "movie.probs.zarr", out / "cells"
    run_stage(["convert", movie, "--axes", "TYX", "-o", out])
    commands = {
        "predict": ["predict", store, "-o", probs, "--device", "cpu", "--batch-size", "1"],
        "segment": ["segment", probs, "--image", store, "--block", "32"],
        "measure": ["measure", store, "-o", table / "movie.parquet", "--block", "32"],
    }
    order = ["predict", "segment", "measure"]
    for earlier in order[: order.index(stage)]:
        run_stage(commands[earlier])
    final = {
        "predict": probs,
        "segment": store / "labels" / "cells",
        "measure": table / "movie.parquet",
    }
    killed = kill_mid_way(commands[stage], final[stage], tmp_path / "stage.log")
    if not killed:
        pytest.skip(f"{stage} finished before it could be killed on this machine")
    assert not final[stage].exists(), "a killed stage left a final output behind"
    for later in order[order.index(stage) :]:
        run_stage(commands[later])
    assert stale_temporaries(final[stage].parent) == []
    csv = table / "movie.csv"
    assert same_bytes(csv, reference["table"].with_suffix(".csv"))
    assert np.array_equal(read_labels(store), read_labels(reference["store"]))
