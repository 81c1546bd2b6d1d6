"""Semantic models on the inference side: class maps, class-area tables, RGB inputs, refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

N_CLASSES = 4
COLOURS = ["#808080", "#800000", None, "#00ff00"]


def semantic_checkpoint(path, *, input_scale: float = 1.0, seed: int = 0):
    """A tiny randomly initialised semantic checkpoint with the training side's metadata."""
    import torch

    from grunet.checkpoint import save_checkpoint
    from grunet.model import GRUUNet, preset

    torch.manual_seed(seed)
    cfg = preset("small", encoder_widths=(4, 4), decoder_widths=(4,), hidden=4, growth=4)
    meta = {
        "task": "semantic",
        "classes": [{"name": f"k{i}", "colour": c} for i, c in enumerate(COLOURS)],
        "ignore_index": 255,
        "normalization": {"mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3], "scale": 255.0},
        "input_scale": input_scale,
    }
    model = GRUUNet(cfg.replace(classes=N_CLASSES, in_channels=3))
    with torch.no_grad():  # a classifier that answers to its input: every class occurs
        model.head.classify.weight.mul_(20.0)
        model.head.classify.bias.zero_()
    save_checkpoint(path, model, meta)
    return path


def rgb_image(shape=(96, 128), seed: int = 1) -> np.ndarray:
    """A smooth (3, Y, X) uint8 scene: gradients and blobs (not noise)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = rng.random((3, *shape))
    smooth = np.stack([ndimage.gaussian_filter(c, 6) for c in noise])
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)
    return (255 * smooth).astype(np.uint8)


@pytest.fixture
def checkpoint(tmp_path):
    return semantic_checkpoint(tmp_path / "sem.pt")


@pytest.fixture
def store(tmp_path):
    from grunet.io import read_image, write_image

    image = rgb_image()
    np.save(tmp_path / "scene.npy", image)
    return write_image(tmp_path / "scene.ome.zarr", read_image(tmp_path / "scene.npy", axes="CYX"))


def test_argmax_never_predicts_the_ignore_index():
    from grunet.class_map import argmax_classes, class_map_dtype

    probs = np.array([[0.1, 0.6], [0.7, 0.3], [0.2, 0.1]])
    assert argmax_classes(probs).tolist() == [1, 0]
    assert argmax_classes(probs, ignore_index=1).tolist() == [2, 0]
    assert class_map_dtype(255) == np.uint8 and class_map_dtype(256) == np.uint16


def test_class_map_round_trips_through_ome_zarr_with_colours_and_names(
    tmp_path, checkpoint, store, one_torch_thread
):
    from grunet.class_map import read_class_names
    from grunet.io import read_labels
    from grunet.predict import Predictor
    from grunet.semantic_predict import predict_semantic_store

    model = Predictor.from_checkpoint(checkpoint, device="cpu")
    labels, table = predict_semantic_store(
        store,
        tmp_path / "scene.probs.zarr",
        tmp_path / "classes" / "scene.parquet",
        model=model,
        progress=False,
        keep_probabilities=True,
    )
    class_map = np.asarray(read_labels(store, "classes"))
    assert class_map.dtype == np.uint8 and class_map.shape == (1, 1, 1, 96, 128)
    assert class_map.max() < N_CLASSES
    assert read_class_names(store) == ["k0", "k1", "k2", "k3"]
    meta = json.loads((labels / "zarr.json").read_text())["attributes"]
    colors = meta["ome"]["image-label"]["colors"]
    assert colors[0] == {"label-value": 0, "rgba": [128, 128, 128, 255]}
    assert colors[3]["rgba"] == [0, 255, 0, 255] and len(colors[2]["rgba"]) == 4
    assert meta["grunet"]["model_sha256"] == model.sha256
    assert meta["grunet"]["object_scale"]["source"].startswith("not applicable")
    assert model.halo == 256 and meta["grunet"]["halo"] == 256  # semantic models: wide context
    assert (
        "classes"
        in json.loads((store / "labels" / "zarr.json").read_text())["attributes"]["ome"]["labels"]
    )
    # the class map is exactly the argmax of the stored (float16) tiled probabilities ...
    import zarr

    from grunet.api import segment
    from grunet.class_map import argmax_classes

    stored = zarr.open_group(str(tmp_path / "scene.probs.zarr"), mode="r")["probs"][0, :, 0]
    np.testing.assert_array_equal(class_map[0, 0, 0], argmax_classes(np.asarray(stored)))
    # ... and agrees with whole-image prediction (this untrained model has near-ties that
    # float16 storage and the CPU's bf16/fp32 kernels round either way: 99.79-99.9 %)
    whole = segment(rgb_image(), model)
    assert (class_map[0, 0, 0] == whole).mean() > 0.995


def test_class_area_table_equals_bincount_per_plane(tmp_path):
    from grunet.class_area import iter_class_areas

    rng = np.random.default_rng(0)
    class_map = rng.integers(0, 3, size=(2, 1, 3, 20, 30)).astype(np.uint8)
    table = pd.concat(
        iter_class_areas(class_map, ["a", "b", "c"], sample="s", pixel_sizes={"y": 0.5, "x": 2.0})
    )
    assert len(table) == 2 * 3 * 3
    for (t, z), rows in table.groupby(["t", "z"]):
        counts = np.bincount(class_map[t, 0, z].ravel(), minlength=3)
        assert rows["pixels"].tolist() == counts.tolist()
        assert rows["area_um2"].tolist() == pytest.approx((counts * 1.0).tolist())
        assert rows["fraction"].sum() == pytest.approx(1.0)
    no_size = next(iter_class_areas(class_map, ["a", "b", "c"], sample="s", pixel_sizes={}))
    assert no_size["area_um2"].isna().all()


def test_tiled_class_map_equals_whole_image_class_map(checkpoint, one_torch_thread):
    from grunet.class_map import argmax_classes
    from grunet.predict import Predictor
    from grunet.task import normalize_mean_std

    # fp32 (fast=False): deterministic; a random tiny model has near-ties everywhere (median
    # top-2 margin ~0.01), so disagreements must all sit on near-ties.
    model = Predictor.from_checkpoint(checkpoint, device="cpu", fast=False)
    image = normalize_mean_std(rgb_image((160, 192)), model.metadata["normalization"])
    whole = model.predict_plane(image)
    tiled = model.predict_plane(image, tile=64, halo=64)  # 3 x 3 windows
    agree = argmax_classes(whole) == argmax_classes(tiled)
    top2 = np.sort(whole, axis=0)[-2:]
    assert agree.mean() >= 0.999
    assert np.all(agree | (top2[1] - top2[0] < 0.01))
    assert np.abs(whole - tiled).max() < 0.005
    assert np.array_equal(model.predict_plane(image, tile=64, halo=64), tiled)  # deterministic


def test_input_scale_predicts_smaller_and_returns_the_input_grid(tmp_path, one_torch_thread):
    import grunet

    model = grunet.load_model(semantic_checkpoint(tmp_path / "half.pt", input_scale=0.5))
    image = rgb_image((97, 131))
    class_map = grunet.segment(image, model)
    assert class_map.shape == (97, 131) and class_map.max() < N_CLASSES
    import dask.array as da

    assert np.array_equal(grunet.segment(da.from_array(image, chunks=32), model), class_map)
    assert np.array_equal(grunet.segment(image, model, chunk_size=40), class_map)


def test_run_on_an_rgb_png_writes_class_map_and_areas(tmp_path, checkpoint, one_torch_thread):
    from PIL import Image

    from grunet.cli import main

    rgba = np.concatenate([rgb_image().transpose(1, 2, 0), np.full((96, 128, 1), 255, np.uint8)], 2)
    Image.fromarray(rgba).save(tmp_path / "street.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                str(tmp_path / "street.png"),
                "-o",
                str(out),
                "--model",
                str(checkpoint),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    from grunet.io import read_labels

    class_map = np.asarray(read_labels(out / "street.ome.zarr", "classes"))[0, 0, 0]
    table = pd.read_parquet(out / "classes" / "street.parquet")
    assert list(table.columns) == [
        "sample",
        "t",
        "z",
        "class_index",
        "class_name",
        "pixels",
        "area_um2",
        "fraction",
    ]
    assert table["pixels"].tolist() == np.bincount(class_map.ravel(), minlength=4).tolist()
    assert (out / "classes" / "street.csv").exists()
    summary = pd.read_csv(out / "class_areas.csv")
    assert summary["sample"].unique().tolist() == ["street"]
    assert not (out / "counts.csv").exists() and not (out / "street.probs.zarr").exists()
    from grunet.measure import read_provenance

    provenance = read_provenance(out / "classes" / "street.parquet")
    assert provenance["model_sha256"] and provenance["classes"] == ["k0", "k1", "k2", "k3"]


def test_segment_and_measure_refuse_semantic_inputs(tmp_path, checkpoint, store, capsys):
    from grunet.cli import main

    probs = tmp_path / "scene.probs.zarr"
    assert (
        main(
            [
                "predict",
                str(store),
                "-o",
                str(probs),
                "--model",
                str(checkpoint),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "classes" / "scene.parquet").exists()
    capsys.readouterr()
    assert main(["segment", str(probs), "--image", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "instance models only" in err
    assert main(["measure", str(store), "-o", str(tmp_path / "cells.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "instance models only" in err
    assert main(["measure", str(store), "--labels", "classes", "-o", str(tmp_path / "c.parquet")])
    assert "instance models only" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--diameter", "30"], ["--diameter-um", "8"]])
def test_nucleus_diameter_given_to_a_semantic_model_is_refused(
    tmp_path, checkpoint, store, capsys, option
):
    from grunet.cli import main

    for command in (["predict", str(store), "-o", str(tmp_path / "p.zarr")], ["run", str(store)]):
        if command[0] == "run":
            command += ["-o", str(tmp_path / "out")]
        assert main([*command, "--model", str(checkpoint), "--device", "cpu", *option]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{option[0]}: sets the nucleus scale of instance models" in err
        assert str(checkpoint) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "out").exists()


def test_corrupt_png_error_names_the_file(tmp_path, capsys):
    from grunet.cli import main

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert main(["convert", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.png" in err


def test_png_and_jpeg_read_as_channels(tmp_path):
    from PIL import Image

    from grunet.io import read_image

    rgb = rgb_image((40, 50)).transpose(1, 2, 0)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), mode="LA").save(tmp_path / "la.png")
    stack = read_image(tmp_path / "a.png")
    assert stack.shape == (1, 3, 1, 40, 50)
    assert np.array_equal(np.asarray(stack.data[0, :, 0]), rgb.transpose(2, 0, 1))
    assert read_image(tmp_path / "a.jpg").shape == (1, 3, 1, 40, 50)
    assert read_image(tmp_path / "grey.png").shape == (1, 1, 1, 40, 50)
    assert read_image(tmp_path / "la.png").shape == (1, 1, 1, 40, 50)


def test_load_model_camvid_says_the_weights_are_missing():
    import grunet
    from grunet.checkpoint import SHIPPED_MODELS

    if SHIPPED_MODELS["camvid"].exists():
        model = grunet.load_model("camvid")
        assert model.semantic and model.classes == 11
        return
    with pytest.raises(grunet.CheckpointError, match="shipped model 'camvid' is not installed"):
        grunet.load_model("camvid")


def test_store_prediction_at_half_scale_in_tiles_equals_whole_image(
    tmp_path, store, one_torch_thread
):
    from grunet.class_map import argmax_classes
    from grunet.io import read_labels
    from grunet.predict import Predictor
    from grunet.semantic_predict import predict_semantic_store
    from grunet.task import normalize_mean_std

    checkpoint = semantic_checkpoint(tmp_path / "half.pt", input_scale=0.5)
    model = Predictor.from_checkpoint(checkpoint, device="cpu", fast=False)
    predict_semantic_store(
        store,
        tmp_path / "p.zarr",
        tmp_path / "a.parquet",
        model=model,
        tile=32,
        halo=32,
        keep_probabilities=False,
        progress=False,
    )
    tiled = np.asarray(read_labels(store, "classes"))[0, 0, 0]
    image = normalize_mean_std(rgb_image(), model.metadata["normalization"])
    whole = model.predict_plane(image, factor=0.5)  # the network sees 48 x 64
    assert tiled.shape == whole.shape[1:] == (96, 128)
    agree = tiled == argmax_classes(whole)
    top2 = np.sort(whole, axis=0)[-2:]
    assert agree.mean() >= 0.99  # (random model: near-ties; float16 probabilities in the store)
    assert np.all(agree | (top2[1] - top2[0] < 0.01))
    assert not (tmp_path / "p.zarr").exists()


def test_class_area_tables_combine_and_report_shows_class_maps(tmp_path, checkpoint, capsys):
    from PIL import Image

    from grunet.cli import main

    for name, seed in (("a", 1), ("b", 2)):
        Image.fromarray(rgb_image(seed=seed).transpose(1, 2, 0)).save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    pngs = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert main(["run", *pngs, "-o", str(out), "--model", str(checkpoint), "--device", "cpu"]) == 0
    tables = [str(out / "classes" / "a.parquet"), str(out / "classes" / "b.parquet")]
    assert main(["count", *tables, "-o", str(tmp_path / "areas.csv")]) == 0
    combined = pd.read_csv(tmp_path / "areas.csv")
    assert combined.equals(pd.read_csv(out / "class_areas.csv"))
    stores = [str(out / "a.ome.zarr"), str(out / "b.ome.zarr")]
    html = tmp_path / "report.html"
    args = ["report", "--class-areas", str(tmp_path / "areas.csv"), "--tables", *tables]
    assert main([*args, "--images", *stores, "--model", str(checkpoint), "-o", str(html)]) == 0
    page = html.read_text()
    assert "Class areas" in page and "Class maps" in page and "k3" in page
    assert page.count("data:image/png;base64") == 3  # the area bars + one overlay per sample


def test_class_map_of_more_than_255_classes_is_uint16(tmp_path, store):
    from grunet.class_map import read_class_names, write_class_map
    from grunet.io import read_labels, write_array
    from grunet.task import SemanticClass

    n = 300
    truth = (np.arange(96 * 128).reshape(96, 128) % n).astype(np.int64)
    probs = np.zeros((1, n, 1, 96, 128), dtype=np.float16)
    np.put_along_axis(probs[0, :, 0], truth[None], 1.0, axis=0)
    write_array(tmp_path / "p.zarr", probs, name="probs", chunks=(1, n, 1, 32, 32))
    classes = [SemanticClass(f"c{i}") for i in range(n)]
    write_class_map(tmp_path / "p.zarr", store, classes)
    class_map = np.asarray(read_labels(store, "classes"))[0, 0, 0]
    assert class_map.dtype == np.uint16 and np.array_equal(class_map, truth)
    assert read_class_names(store)[299] == "c299"


def test_evaluate_reads_the_class_map_that_run_wrote(tmp_path, checkpoint, one_torch_thread):
    import json

    from PIL import Image

    from grunet.cli import main
    from grunet.io import read_labels

    Image.fromarray(rgb_image().transpose(1, 2, 0)).save(tmp_path / "s.png")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "s.png"), "-o", str(out), "--model", str(checkpoint)]) == 0
    class_map = np.asarray(read_labels(out / "s.ome.zarr", "classes"))[0, 0, 0]
    Image.fromarray(class_map).save(tmp_path / "truth.png")  # the prediction as its own truth
    args = ["evaluate", "--pred", str(out / "s.ome.zarr"), "--truth", str(tmp_path / "truth.png")]
    assert main([*args, "--model", str(checkpoint), "-o", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["global_accuracy"] == 1.0
