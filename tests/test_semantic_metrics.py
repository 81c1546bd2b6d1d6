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
