"""Semantic metrics on hand-made cases: confusion, accuracies, IoU (absent classes not counted)."""

from __future__ import annotations

import numpy as np
import pytest

from grunet.semantic_metrics import (
    confusion_matrix,
    per_class_iou,
    plot_confusion,
    semantic_metrics,
    write_confusion_csv,
)


def test_confusion_rows_are_truth_and_ignore_is_left_out():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = confusion_matrix(truth, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert cm.sum() == 6  # the two ignored pixels are not counted, whatever was predicted


def test_metrics_of_a_hand_made_confusion():
    # truth 0: 3 right, 1 as class 1; truth 1: 4 right; truth 2: 1 right, 1 as class 0
    cm = np.array([[3, 1, 0], [0, 4, 0], [1, 0, 1]])
    m = semantic_metrics(cm, ["a", "b", "c"])
    assert m["global_accuracy"] == pytest.approx(8 / 10)
    assert m["class_average_accuracy"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    iou = [3 / (4 + 4 - 3), 4 / (4 + 5 - 4), 1 / (2 + 1 - 1)]
    assert [m["per_class"][k]["iou"] for k in "abc"] == pytest.approx(iou)
    assert m["mean_iou"] == pytest.approx(np.mean(iou))


def test_class_absent_from_truth_and_prediction_is_not_counted():
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 1])
    m = semantic_metrics(confusion_matrix(truth, pred, 3))
    assert m["mean_iou"] == 1.0  # class 2 occurs nowhere: nan, not 0
    assert m["per_class"]["class_2"]["iou"] is None
    assert m["n_classes_scored"] == 2
    assert m["class_average_accuracy"] == 1.0


def test_class_only_predicted_scores_zero():
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])
    iou = per_class_iou(confusion_matrix(truth, pred, 3))
    assert iou[2] == 0.0
    assert semantic_metrics(confusion_matrix(truth, pred, 3))["mean_iou"] == pytest.approx(
        (0.5 + 1.0 + 0.0) / 3
    )


def test_all_ignored_gives_nan_not_an_error():
    m = semantic_metrics(confusion_matrix(np.full(4, 255), np.zeros(4, int), 2))
    assert np.isnan(m["mean_iou"]) and np.isnan(m["global_accuracy"])


def test_out_of_range_values_are_errors():
    with pytest.raises(ValueError, match="true label 3"):
        confusion_matrix(np.array([3]), np.array([0]), 3)
    with pytest.raises(ValueError, match="predicted class 5"):
        confusion_matrix(np.array([0]), np.array([5]), 3)


def test_confusion_csv_and_plot(tmp_path):
    cm = np.array([[5, 1], [0, 2]])
    write_confusion_csv(cm, ["road", "car"], tmp_path / "c.csv")
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines == ["true\\predicted,road,car", "road,5,1", "car,0,2"]
    plot_confusion(cm, ["road", "car"], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- grunet evaluate --semantic
def tiny_checkpoint(path, task: str, n_classes: int):
    from grunet.checkpoint import save_checkpoint
    from grunet.model import GRUUNet, preset

    cfg = preset("small", encoder_widths=(4, 4), decoder_widths=(4,), hidden=4, growth=4)
    meta = {"task": task}
    if task == "semantic":
        meta["classes"] = [{"name": f"k{i}", "colour": None} for i in range(n_classes)]
        meta["ignore_index"] = 255
    save_checkpoint(path, GRUUNet(cfg.replace(classes=n_classes, in_channels=3)), meta)
    return path


def write_maps(tmp_path, truth, pred):
    from PIL import Image

    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "truth.png")
    Image.fromarray(pred.astype(np.uint8)).save(tmp_path / "pred.png")
    return str(tmp_path / "pred.png"), str(tmp_path / "truth.png")


def test_evaluate_cli_detects_a_semantic_checkpoint(tmp_path, capsys):
    import json

    from grunet.cli import main

    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    p, t = write_maps(tmp_path, truth, pred)
    model = tiny_checkpoint(tmp_path / "sem.pt", "semantic", 4)
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", p, "--truth", t, "-o", str(out), "--model", str(model)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confusion"][:3] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0]]
    assert metrics["per_class"]["k3"]["iou"] is None  # absent from truth and prediction
    expected = semantic_metrics(confusion_matrix(truth, pred, 4))["mean_iou"]
    assert metrics["mean_iou"] == pytest.approx(expected)
    assert (out / "confusion.csv").read_text().startswith("true\\predicted,k0,k1,k2,k3")
    assert (out / "confusion.png").exists() and (out / "per_image.csv").exists()
    assert "mIoU" in capsys.readouterr().out


def test_evaluate_semantic_without_model_and_bad_values(tmp_path, capsys):
    from grunet.cli import main

    truth = np.array([[0, 1], [1, 255]])
    p, t = write_maps(tmp_path, truth, np.array([[0, 1], [1, 0]]))
    out = str(tmp_path / "eval")
    assert main(["evaluate", "--semantic", "--pred", p, "--truth", t, "-o", out]) == 0
    assert (
        main(["evaluate", "--semantic", "--classes", "2", "--pred", p, "--truth", t, "-o", out])
        == 0
    )
    p, t = write_maps(tmp_path, np.array([[0, 5]]), np.array([[0, 1]]))
    assert (
        main(["evaluate", "--semantic", "--classes", "2", "--pred", p, "--truth", t, "-o", out])
        == 2
    )
    err = capsys.readouterr().err
    assert "truth.png" in err and "value 5" in err


def test_evaluate_refuses_the_wrong_task_checkpoint(tmp_path, capsys):
    from grunet.cli import main
    from grunet.errors import CheckpointError
    from grunet.semantic_evaluate import evaluate_semantic_files

    p, t = write_maps(tmp_path, np.array([[0, 1]]), np.array([[0, 1]]))
    instance = tiny_checkpoint(tmp_path / "inst.pt", "instance", 3)
    semantic = tiny_checkpoint(tmp_path / "sem.pt", "semantic", 2)
    with pytest.raises(CheckpointError, match="inst.pt: is an instance model"):
        evaluate_semantic_files([p], [t], tmp_path / "e", model=instance)
    out = str(tmp_path / "e")
    args = ["evaluate", "--pred", p, "--truth", t, "-o", out, "--model"]
    assert main([*args, str(instance), "--semantic"]) == 2
    assert "instance model" in capsys.readouterr().err
    assert main([*args, str(semantic), "--instance"]) == 2
    assert "semantic model" in capsys.readouterr().err


def test_shipped_models_by_name(tmp_path):
    from grunet.checkpoint import SHIPPED_MODEL, SHIPPED_MODELS, resolve_model_path
    from grunet.errors import CheckpointError

    assert resolve_model_path(None) == SHIPPED_MODEL
    assert resolve_model_path("nuclei") == resolve_model_path("dsb2018") == SHIPPED_MODEL
    assert resolve_model_path("camvid") == SHIPPED_MODELS["camvid"]
    own = tiny_checkpoint(tmp_path / "camvid", "semantic", 2)  # an existing file wins
    assert resolve_model_path(own) == own
    with pytest.raises(CheckpointError, match="camvid, dsb2018, nuclei"):
        resolve_model_path("streets")
