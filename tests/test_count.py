"""Cell counts: n_cells == distinct labels per (sample, t); experiment-wide concatenation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from grunet.cli import main
from grunet.count import counts_from_table
from grunet.measure import measure_stack, write_table


@pytest.fixture(scope="module")
def volume_table(nuclei_3d) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-cell table of real 3D labels (T=2: the volume and its mirror), one row per z plane."""
    labels = nuclei_3d[1][20:32, :128, :128].astype(np.uint32)
    stack = np.stack([labels, np.where(labels[:, ::-1] > 0, labels[:, ::-1] + 1000, 0)])
    stack[1][stack[1] == stack[1].max()] = 0  # t=1 has one cell fewer
    table = measure_stack(stack, None, sample="emb1", metadata={"well": "B02"})
    return table, stack


def test_counts_equal_distinct_labels_per_timepoint(volume_table):
    table, stack = volume_table
    counts = counts_from_table(table)
    assert list(counts.columns) == ["sample", "t", "n_cells", "well"]
    for t in range(2):
        expected = np.unique(stack[t][stack[t] > 0]).size
        assert counts.loc[counts["t"] == t, "n_cells"].item() == expected
    # a 3D cell spans several z rows but counts once
    assert len(table[table["t"] == 0]) > counts.loc[0, "n_cells"]
    assert set(counts["well"]) == {"B02"}


def test_timepoints_without_cells_count_zero():
    empty = measure_stack(np.zeros((3, 1, 16, 16), np.uint32), None, sample="s", metadata={})
    counts = counts_from_table(empty, n_timepoints=3, sample="s", metadata={"well": "C3"})
    assert counts["n_cells"].tolist() == [0, 0, 0] and counts["t"].tolist() == [0, 1, 2]
    assert counts["well"].tolist() == ["C3"] * 3


def test_count_cli_tables_then_experiment_counts(volume_table, tmp_path):
    table, stack = volume_table
    provenance = {"sample": "emb1", "shape": {"t": 2}, "metadata": {"well": "B02"}}
    write_table(table, tmp_path / "cells" / "emb1.parquet", provenance)
    empty = measure_stack(np.zeros((2, 1, 8, 8), np.uint32), None, sample="emb2")
    provenance2 = {"sample": "emb2", "shape": {"t": 2}, "metadata": {"well": "B03"}}
    write_table(empty, tmp_path / "cells" / "emb2.parquet", provenance2)
    for name in ("emb1", "emb2"):
        argv = ["count", str(tmp_path / "cells" / f"{name}.parquet")]
        assert main([*argv, "-o", str(tmp_path / "counts" / f"{name}.csv")]) == 0
    out = tmp_path / "counts.csv"
    inputs = [str(tmp_path / "counts" / f"{n}.csv") for n in ("emb2", "emb1")]
    assert main(["count", *inputs, "-o", str(out)]) == 0
    counts = pd.read_csv(out)
    assert counts[["sample", "t"]].values.tolist() == [["emb1", 0], ["emb1", 1]] + [
        ["emb2", 0],
        ["emb2", 1],
    ]
    expected = [np.unique(s[s > 0]).size for s in stack] + [0, 0]
    assert counts["n_cells"].tolist() == expected
    assert counts["well"].tolist() == ["B02", "B02", "B03", "B03"]
    assert json.loads((tmp_path / "counts.csv.json").read_text())["stage"] == "count"
    # the same sample twice is refused; an existing output needs --overwrite
    assert main(["count", *inputs, inputs[0], "-o", str(tmp_path / "dup.csv")]) == 2
    assert main(["count", *inputs, "-o", str(out)]) == 2
    assert main(["count", *inputs, "-o", str(out), "--overwrite"]) == 0


def test_unreadable_input_error_names_the_file(tmp_path, capsys):
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    assert main(["count", str(bad), "-o", str(tmp_path / "c.csv")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_empty_image_gives_zero_cells_through_segment_measure_count(tmp_path, nuclei_3d):
    """A real image whose probabilities say "all background": valid empty outputs, no error."""
    from grunet import io as gio
    from grunet.io import ImageStack
    from grunet.measure import measure_store
    from grunet.measure3d import table_columns_3d
    from grunet.segmentation import segment_store

    image = nuclei_3d[0][None, None, 28:31, :96, :80]  # (T=1, C=1, Z=3, Y, X): a 3D stack
    store = gio.write_image(tmp_path / "E.ome.zarr", ImageStack(image), chunks=64)
    probs = np.zeros((1, 3, 3, 96, 80), np.float16)
    probs[:, 0] = 1
    probs_path = gio.write_array(tmp_path / "E.probs.zarr", probs, name="probs")
    segment_store(probs_path, store)
    assert not gio.read_labels(store).compute().any()
    table_path = measure_store(store, tmp_path / "cells" / "E.parquet", metadata={"well": "D4"})
    table = pd.read_parquet(table_path)
    # labelled in 3D, so measured per 3D cell
    assert len(table) == 0 and list(table.columns) == [*table_columns_3d(["ch0"]), "well"]
    assert main(["count", str(table_path), "-o", str(tmp_path / "E.csv")]) == 0
    counts = pd.read_csv(tmp_path / "E.csv")
    assert counts.to_dict("records") == [{"sample": "E", "t": 0, "n_cells": 0, "well": "D4"}]


def test_per_cell_csv_tables_are_counted_too(volume_table, tmp_path):
    table, stack = volume_table
    table.to_csv(tmp_path / "emb1.csv", index=False)
    assert main(["count", str(tmp_path / "emb1.csv"), "-o", str(tmp_path / "n.csv")]) == 0
    counts = pd.read_csv(tmp_path / "n.csv")
    assert counts["n_cells"].tolist() == [np.unique(s[s > 0]).size for s in stack]
    assert counts["well"].tolist() == ["B02", "B02"]
