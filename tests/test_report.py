"""grunet report: one self-contained HTML page from real (tiny) data."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from grunet.checkpoint import file_sha256
from grunet.cli import main
from grunet.errors import InputError
from grunet.report import build_report


def _labels_of(frames: np.ndarray) -> np.ndarray:
    """Rough instance labels of real nuclei frames (Otsu + connected components)."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    return np.stack([label(f > threshold_otsu(f)) for f in frames]).astype(np.uint32)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, nuclei_timelapse):
    """Two samples cut from the real nuclei time-lapse, with labels, tables, counts, probs."""
    from skimage.measure import regionprops_table

    from grunet.io import ImageStack, write_array, write_image, write_labels

    root = tmp_path_factory.mktemp("report")
    model = root / "model.pt"
    model.write_bytes(b"not really a checkpoint, only hashed")
    sha = file_sha256(model)
    crops = {"ctrl_A01": (slice(0, 3), slice(0, 96)), "drug_A02": (slice(3, 6), slice(96, 192))}
    stores, tables, probs, counts = [], [], [], []
    for (sample, (ts, ys)), condition in zip(crops.items(), ["control", "drug"]):
        frames = nuclei_timelapse[ts, ys, 100:196]
        store = root / f"{sample}.ome.zarr"
        stack = ImageStack(frames[:, None, None], pixel_sizes={"y": 0.5, "x": 0.5}, source="demo")
        write_image(store, stack)
        labels = _labels_of(frames)
        write_labels(store, labels[:, None, None])
        prob = root / f"{sample}.probs.zarr"
        write_array(
            prob,
            np.zeros((3, 3, 1, 96, 96), np.float16),
            name="probs",
            attrs={"grunet": {"model_sha256": sha, "source": str(store), "version": "test"}},
        )
        rows = []
        for t, plane in enumerate(labels):
            props = pd.DataFrame(regionprops_table(plane, properties=("label", "area")))
            props.insert(0, "t", t)
            rows.append(props)
        table = pd.concat(rows, ignore_index=True)
        table.insert(0, "sample", sample)
        table["z"] = 0
        table["area_um2"] = table["area"] * 0.25
        table["condition"] = condition
        path = root / f"{sample}.parquet"
        table.to_parquet(path)
        n = table.groupby("t").size().rename("n_cells").reset_index()
        n.insert(0, "sample", sample)
        n["condition"] = condition
        stores.append(store)
        tables.append(path)
        probs.append(prob)
        counts.append(n)
    counts_csv = root / "counts.csv"
    pd.concat(counts).to_csv(counts_csv, index=False)
    config = root / "config.yaml"
    config.write_text("predict:\n  tile: 256  # a distinctive line\n")
    train = root / "train"
    train.mkdir()
    pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [0.9, 0.5, 0.4], "val_loss": [1, 0.7, 0.6]}
    ).to_csv(train / "log.csv", index=False)
    (train / "val_metrics.json").write_text(json.dumps({"f1": {"0.5": 0.8123}, "ap_50": 0.7}))
    return {
        "root": root,
        "counts": counts_csv,
        "tables": tables,
        "images": stores,
        "probs": probs,
        "model": model,
        "sha": sha,
        "config": config,
        "train": train,
    }


def _embedded_pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]


def test_report_is_one_self_contained_page_with_every_section(experiment, tmp_path):
    out = build_report(
        tmp_path / "report.html",
        counts=experiment["counts"],
        tables=experiment["tables"],
        images=experiment["images"],
        probs=experiment["probs"],
        model=experiment["model"],
        train_dir=experiment["train"],
        config_files=[experiment["config"]],
        frames=2,
    )
    page = out.read_text()
    # self-contained: nothing is fetched from elsewhere
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"](?!data:)", page)
    for sample in ("ctrl_A01", "drug_A02"):
        assert sample in page
    for heading in ("Samples", "Cell counts", "Segmentation overlays", "Cell sizes", "Training"):
        assert f"<h2>{heading}</h2>" in page
    assert "per condition" in page  # grouped count plot
    assert experiment["sha"] in page  # model provenance
    assert "a distinctive line" in page  # config shown verbatim
    assert "0.8123" in page  # validation metric
    import grunet

    assert f"grunet {grunet.__version__}" in page
    pngs = _embedded_pngs(page)
    # 2 count plots + 2 samples x 2 overlays + 2 size plots + 1 training plot
    assert len(pngs) == 9
    assert all(p.startswith(b"\x89PNG") for p in pngs)


def test_overlay_shows_label_outlines_over_the_image(experiment, tmp_path):
    import matplotlib.image

    page = build_report(
        tmp_path / "r.html",
        counts=experiment["counts"],
        tables=experiment["tables"][:1],
        images=experiment["images"][:1],
        frames=1,
        group_by=None,
    ).read_text()
    overlay = [
        p
        for p in _embedded_pngs(page)
        if matplotlib.image.imread(io.BytesIO(p)).shape[:2] == (96, 96)
    ]
    assert len(overlay) == 1
    rgb = matplotlib.image.imread(io.BytesIO(overlay[0]))[..., :3]
    coloured = np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2]) > 0.05
    assert 0.01 < coloured.mean() < 0.6  # outlines are coloured, the background stays grey
    assert "Training" not in page  # no model was trained


def test_overlay_shows_the_channel_the_model_read(nuclei_timelapse, tmp_path):
    """A two-channel image whose first channel is flat: the overlay is drawn over the channel
    the labels were segmented from (recorded in their provenance), not over the flat one."""
    import matplotlib.image

    from grunet.io import ImageStack, write_image, write_labels

    frame = nuclei_timelapse[0, :96, 100:196]
    data = np.stack([np.full_like(frame, 50), frame])[None, :, None]
    store = write_image(
        tmp_path / "two.ome.zarr", ImageStack(data, channel_names=["BF", "Hoechst"])
    )
    labels = _labels_of(frame[None])
    write_labels(store, labels[:, None, None], attrs={"channel_names": ["Hoechst"]})
    counts, table = tmp_path / "counts.csv", tmp_path / "two.parquet"
    pd.DataFrame({"sample": ["two"], "t": [0], "n_cells": [int(labels.max())]}).to_csv(counts)
    pd.DataFrame({"sample": ["two"], "t": [0], "z": [0], "label": [1], "area": [9]}).to_parquet(
        table
    )
    page = build_report(
        tmp_path / "r.html", counts=counts, tables=[table], images=[store], frames=1
    ).read_text()
    assert "t=0, Hoechst:" in page
    (overlay,) = [
        p
        for p in _embedded_pngs(page)
        if matplotlib.image.imread(io.BytesIO(p)).shape[:2] == (96, 96)
    ]
    grey = matplotlib.image.imread(io.BytesIO(overlay))[..., 0][labels[0] == 0]
    assert np.corrcoef(grey, frame[labels[0] == 0])[0, 1] > 0.5  # the nuclei channel shows


def test_report_warns_when_probs_come_from_another_model(experiment, tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(b"another model")
    page = build_report(
        tmp_path / "r.html",
        counts=experiment["counts"],
        tables=experiment["tables"],
        images=experiment["images"],
        probs=experiment["probs"],
        model=other,
    ).read_text()
    assert "another model than the one given" in page


def test_missing_table_error_names_the_file(experiment, tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(InputError, match="nope.parquet"):
        build_report(
            tmp_path / "r.html",
            counts=experiment["counts"],
            tables=[missing],
            images=experiment["images"],
        )
    assert not (tmp_path / "r.html").exists()


def test_cli_report_refuses_to_overwrite_then_overwrites(experiment, tmp_path, capsys):
    out = tmp_path / "report.html"
    args = [
        "report",
        "--counts",
        str(experiment["counts"]),
        "--tables",
        *map(str, experiment["tables"]),
        "--images",
        *map(str, experiment["images"]),
        "-o",
        str(out),
    ]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_report_shows_the_checkpoint_training_metadata(experiment, tmp_path):
    import torch

    from grunet.checkpoint import save_checkpoint
    from grunet.model import SMALL, GRUUNet

    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    sha = save_checkpoint(model, GRUUNet(SMALL), {"epochs": 7, "val": {"val_f1_50": 0.7302}})
    page = build_report(
        tmp_path / "r.html",
        counts=experiment["counts"],
        tables=experiment["tables"],
        images=experiment["images"],
        model=model,
    ).read_text()
    assert sha in page
    assert "val.val_f1_50" in page and "0.7302" in page


def test_unreadable_checkpoint_is_reported_not_fatal(experiment, tmp_path):
    page = build_report(
        tmp_path / "r.html",
        counts=experiment["counts"],
        tables=experiment["tables"],
        images=experiment["images"],
        model=experiment["model"],  # not a checkpoint: its sha256 is still shown
    ).read_text()
    assert experiment["sha"] in page and "not a readable grunet checkpoint" in page


def test_overlays_are_capped_to_keep_the_page_small(experiment, tmp_path):
    page = build_report(
        tmp_path / "r.html",
        counts=experiment["counts"],
        tables=experiment["tables"],
        images=experiment["images"],
        frames=1,
        max_overlay_samples=1,
    ).read_text()
    assert "not shown: drug_A02" in page
    assert page.count("<figcaption>t=") == 1
