"""The Python API and `grunet run` with the shipped model, on real nuclei images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

import grunet
from grunet.cli import main
from grunet.io import read_labels


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return grunet.load_model(device="cpu")


def same_up_to_relabelling(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (
        len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))
        and not ((pairs[0] == 0) ^ (pairs[1] == 0)).any()
    )


def test_shipped_model_finds_the_nuclei_of_a_real_frame(model, nuclei_timelapse):
    frame = nuclei_timelapse[0]
    labels = grunet.segment(frame, model)
    assert labels.dtype == np.uint32 and labels.shape == frame.shape
    n_cells = len(np.unique(labels)) - 1
    assert 12 <= n_cells <= 30  # 15 nuclei counted by eye (tests/test_scale.py DEMO_COUNTS)
    inside = frame[labels > 0].mean()
    outside = frame[labels == 0].mean()
    assert inside > 2 * outside  # cells are the bright nuclei, not background


@pytest.mark.parametrize("chunk_size", [64, 200])
def test_chunked_labels_equal_whole_image_labels(model, nuclei_timelapse, chunk_size):
    frame = nuclei_timelapse[5, :300, :300]
    whole = grunet.segment(frame, model)
    chunked = grunet.segment(frame, model, chunk_size=chunk_size)
    assert same_up_to_relabelling(whole, chunked)


def test_wrong_channel_count_is_a_clear_error(model):
    with pytest.raises(grunet.InputError, match="expects 1"):
        grunet.segment(np.zeros((2, 32, 32), np.uint8), model)


def test_run_writes_labels_tables_and_counts_that_agree(tmp_path, nuclei_timelapse):
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, nuclei_timelapse[:2, :256, :256])
    before = movie.read_bytes()
    out = tmp_path / "out"
    assert main(["run", str(movie), "--axes", "TYX", "-o", str(out), "--device", "cpu"]) == 0
    assert movie.read_bytes() == before
    labels = np.asarray(read_labels(out / "movie.ome.zarr"))
    cells = pd.read_parquet(out / "cells" / "movie.parquet")
    counts = pd.read_csv(out / "counts.csv")
    assert list(counts["t"]) == [0, 1]
    for t in (0, 1):
        n_labels = len(np.unique(labels[t])) - 1
        assert 2 <= n_labels <= 20  # the crop holds 2 whole nuclei and parts of others
        assert counts.loc[counts.t == t, "n_cells"].item() == n_labels
        assert (cells.t == t).sum() == n_labels
    assert (out / "cells" / "movie.csv").exists()
    assert not (out / "movie.probs.zarr").exists()
