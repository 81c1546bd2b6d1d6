"""Semantic training: synthetic N-class tasks learn, the head has N outputs, ignored pixels get
no gradient, bad label values are named, class weights follow their definitions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset
from PIL import Image

from grunet.checkpoint import load_checkpoint
from grunet.errors import ConfigError, InputError
from grunet.semantic_data import SemanticSample, class_weights, read_classes_csv
from grunet.semantic_train import semantic_loss
from grunet.task import ignore_index, model_task, semantic_classes
from grunet.train import train

COLOURS = np.array(
    [[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [40, 200, 200]], np.uint8
)
TINY = {
    "preset": "small",
    "encoder_widths": [8, 8, 8],
    "decoder_widths": [8, 8],
    "hidden": 6,
    "dense_layers": 1,
    "growth": 4,
}


def make_dataset(root: Path, n_classes: int, n_images: int = 6, size: int = 48, seed: int = 0):
    """Images whose class regions (random rectangles) have a class colour plus noise; some
    pixels are void (255)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = []
    for i in range(n_images):
        labels = np.zeros((size, size), np.uint8)
        for _ in range(6):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(8, size // 2, 2)
            labels[y : y + h, x : x + w] = rng.integers(0, n_classes)
        image = COLOURS[labels].astype(np.int16) + rng.integers(-30, 30, (size, size, 3))
        labels[:3] = 255  # a void band
        image = np.clip(image, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        Image.fromarray(labels).save(root / "labels" / f"im{i}.png")
        rows.append({"id": f"im{i}", "split": "val" if i < 2 else "train"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def config(root: Path, n_classes: int, **overrides) -> dict:
    cfg = {
        "task": "semantic",
        "classes": [f"c{i}" for i in range(n_classes)],
        "class_weighting": "median_frequency",
        "model": dict(TINY),
        "data": {"root": str(root)},
        "patch_size": 32,
        "batch_size": 4,
        "epochs": 2,
        "steps_per_epoch": 10,
        "lr": 0.01,
        "warmup_steps": 2,
        "amp": False,
        "seed": 0,
    }
    cfg.update(overrides)
    return cfg


@pytest.mark.parametrize("n_classes", [2, 5])
def test_synthetic_task_learns_and_head_has_n_outputs(tmp_path, n_classes, one_torch_thread):
    root = make_dataset(tmp_path / "data", n_classes)
    out = tmp_path / "run"
    best = train(config(root, n_classes), out, device="cpu")
    with open(out / "log.csv") as fh:
        log = list(csv.DictReader(fh))
    losses = [float(r["train_loss"]) for r in log]
    assert losses[-1] < 0.8 * losses[0]
    assert 0 <= best["mean_iou"] <= 1
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt.config.classes == n_classes and ckpt.config.in_channels == 3
    meta = ckpt.metadata
    assert model_task(meta) == "semantic" and ignore_index(meta) == 255
    names = [c.name for c in semantic_classes(meta, n_classes)]
    assert names == [f"c{i}" for i in range(n_classes)]
    assert len(meta["normalization"]["mean"]) == 3 and meta["normalization"]["scale"] == 255
    with torch.no_grad():
        logits = ckpt.build_model()(torch.zeros(1, 3, 40, 24))
    assert logits.shape == (1, n_classes, 40, 24)
    for name in ("last.pt", "curves.png", "val_metrics.json", "confusion.csv"):
        assert (out / name).exists()


def test_resume_continues_the_log(tmp_path, one_torch_thread):
    root = make_dataset(tmp_path / "data", 2)
    cfg = config(root, 2, epochs=2, steps_per_epoch=2)
    train(cfg, tmp_path / "run", device="cpu", stop_after=1)
    train(cfg, tmp_path / "run", device="cpu", resume=True)
    with open(tmp_path / "run" / "log.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]


@pytest.mark.parametrize("loss", ["ce", "focal", "ce_dice"])
def test_ignored_pixels_get_no_gradient(loss):
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 8, 8))
    target[:, :3] = 255
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])

    def grad(logits):
        logits = logits.clone().requires_grad_(True)
        value = semantic_loss(logits, target, name=loss, weights=weights)
        value.backward()
        return float(value), logits.grad

    logits = torch.randn(2, 4, 8, 8)
    value, g = grad(logits)
    assert torch.all(g[:, :, :3] == 0)
    assert g[:, :, 3:].abs().sum() > 0
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 4, 3, 8) * 10  # the ignored pixels' scores change ...
    value2, g2 = grad(changed)
    assert value2 == pytest.approx(value)  # ... the loss and gradients do not
    assert torch.allclose(g2, g)


def test_all_ignored_batch_has_zero_loss():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    value = semantic_loss(logits, torch.full((1, 4, 4), 255))
    value.backward()
    assert float(value) == 0.0 and torch.all(logits.grad == 0)


def test_label_value_out_of_range_is_named(tmp_path):
    root = make_dataset(tmp_path / "data", 5)
    bad = np.array(Image.open(root / "labels" / "im3.png"))
    bad[10, 10] = 7
    Image.fromarray(bad).save(root / "labels" / "im3.png")
    with pytest.raises(InputError, match=r"im3\.png.*label value 7"):
        train(config(root, 5), tmp_path / "run", device="cpu")


def test_instance_loss_for_semantic_task_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "data", 2)
    with pytest.raises(ConfigError, match="loss.name"):
        train(config(root, 2, loss={"name": "wce"}), tmp_path / "run", device="cpu")


def test_class_weights():
    labels = [np.array([[0, 0, 0, 1]], np.uint8), np.array([[0, 0, 2, 2]], np.uint8)]
    samples = [SemanticSample("a", None, lab, lab) for lab in labels]
    assert class_weights(samples, 3, "none") == [1.0, 1.0, 1.0]
    # median frequency: freq = pixels / labelled pixels of the images where the class occurs
    freq = np.array([5 / 8, 1 / 4, 2 / 4])
    assert class_weights(samples, 3, "median_frequency") == pytest.approx(np.median(freq) / freq)
    sqrt = class_weights(samples, 3, "median_frequency_sqrt")
    assert sqrt == pytest.approx(np.sqrt(np.median(freq) / freq))
    inverse = 1 / np.array([5 / 8, 1 / 8, 2 / 8])
    assert class_weights(samples, 3, "inverse") == pytest.approx(inverse / inverse.mean())


def test_classes_csv_leaves_out_the_ignore_row(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("index,name,colour\n0,Sky,#808080\n1,Road,#804080\n255,Void,#000000\n")
    assert read_classes_csv(path) == [
        {"name": "Sky", "colour": "#808080"},
        {"name": "Road", "colour": "#804080"},
    ]


def test_export_keeps_what_inference_needs(tmp_path, one_torch_thread):
    from grunet.semantic_train import export_semantic_model

    root = make_dataset(tmp_path / "data", 3)
    train(config(root, 3, epochs=1, steps_per_epoch=1), tmp_path / "run", device="cpu")
    sidecar = export_semantic_model(tmp_path / "run", tmp_path / "m.pt", command="grunet train")
    meta = load_checkpoint(tmp_path / "m.pt").metadata
    assert "resume" not in meta and sidecar["sha256"] == load_checkpoint(tmp_path / "m.pt").sha256
    for key in ("task", "classes", "ignore_index", "normalization", "input_scale"):
        assert meta[key] == sidecar[key]
    assert meta["val_metrics"]["mean_iou"] is not None


def test_camvid_layout_reads_as_a_semantic_dataset():
    from grunet.semantic_data import load_split, resolve_classes

    root = shared_dataset("camvid")
    classes = resolve_classes(None, root, 255)
    assert [c["name"] for c in classes][:4] == ["Sky", "Building", "Pole", "Road"]
    assert len(classes) == 11 and classes[0]["colour"] == "#808080"
    (sample,) = load_split(root, "val", n_classes=11, ignore_index=255, input_scale=0.5, limit=1)
    assert sample.image.shape == (180, 240, 3) and sample.labels.shape == (180, 240)
    assert sample.full_labels.shape == (360, 480)
    assert set(np.unique(sample.full_labels)) <= set(range(11)) | {255}


def test_explicit_pairs_train_with_a_seeded_val_split(tmp_path, one_torch_thread):
    """The workflow trains from its converted samples (OME-Zarr) and the sheet's label files."""
    from grunet.io.convert import convert

    root = make_dataset(tmp_path / "data", 3)
    pngs = sorted((root / "images").glob("*.png"))
    stores = convert(pngs, tmp_path / "stores")
    labels = [root / "labels" / p.name for p in pngs]
    cfg = config(None, 3, epochs=1)
    cfg["data"] = {"root": None, "val_fraction": 0.34}
    out = tmp_path / "run"
    best = train(cfg, out, device="cpu", images=stores, labels=labels)
    assert 0 <= best["mean_iou"] <= 1
    files = json.loads((out / "config.json").read_text())["data"]["files"]
    assert len(files["val"]) == 2 and len(files["train"]) == 4
    assert set(files["val"]) | set(files["train"]) == {p.stem for p in pngs}
    with pytest.raises(ConfigError, match="one class-label file per image"):
        train(cfg, tmp_path / "run2", device="cpu", images=stores, labels=labels[:-1])
