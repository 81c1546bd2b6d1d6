"""Instance metrics on hand-made cases whose answers are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from grunet.cli import main
from grunet.evaluate import evaluate_labels, image_counts, overlap, summarize


def squares(shape=(40, 60), boxes=((2, 2, 12, 12), (20, 30, 30, 40), (5, 40, 15, 50))):
    labels = np.zeros(shape, np.uint16)
    for i, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = i
    return labels


def test_identical_and_relabelled_predictions_score_one():
    truth = squares()
    pred = np.where(truth > 0, 10 - truth, 0)  # same objects, other ids
    m = evaluate_labels(truth, pred)
    assert m["ap50"] == m["f1_50"] == m["seg"] == m["mean_matched_iou"] == 1.0
    assert all(v["f1"] == 1.0 for v in m["thresholds"].values())


def test_missing_object_is_a_false_negative():
    truth = squares()
    pred = truth.copy()
    pred[pred == 2] = 0
    t = evaluate_labels(truth, pred)["thresholds"][0.5]
    assert (t["tp"], t["fp"], t["fn"]) == (2, 0, 1)
    assert t["ap"] == pytest.approx(2 / 3) and t["f1"] == pytest.approx(0.8)
    assert t["precision"] == 1.0 and t["recall"] == pytest.approx(2 / 3)


def test_shifted_object_matches_only_below_its_iou():
    truth = squares(boxes=((10, 10, 20, 20),))
    pred = squares(boxes=((10, 12, 20, 22),))  # 80 shared px, union 120: IoU 2/3
    m = evaluate_labels(truth, pred)
    assert m["thresholds"][0.65]["tp"] == 1 and m["thresholds"][0.7]["tp"] == 0
    assert m["mean_matched_iou"] == pytest.approx(2 / 3)
    assert m["seg"] == pytest.approx(2 / 3)  # covers 80 % of the object


def test_merged_prediction_matches_one_object_and_segs_both_halves():
    truth = squares(boxes=((10, 10, 20, 20), (10, 20, 20, 30)))
    pred = squares(boxes=((10, 10, 20, 30),))  # IoU 0.5 with each
    m = evaluate_labels(truth, pred)
    t = m["thresholds"][0.5]
    assert (t["tp"], t["fp"], t["fn"]) == (1, 0, 1)  # one-to-one, IoU >= 0.5
    assert m["thresholds"][0.55]["tp"] == 0
    assert m["seg"] == pytest.approx(0.5)


def test_split_prediction_gets_no_seg_credit():
    truth = squares(boxes=((10, 10, 20, 30),))
    pred = squares(boxes=((10, 10, 20, 20), (10, 20, 20, 30)))  # each half covers exactly 50 %
    m = evaluate_labels(truth, pred)
    assert m["seg"] == 0.0
    t = m["thresholds"][0.5]
    assert (t["tp"], t["fp"], t["fn"]) == (1, 1, 0)


def test_empty_images_and_pooling_over_images():
    truth = squares()
    empty = np.zeros_like(truth)
    assert evaluate_labels(empty, empty)["f1_50"] == 1.0
    assert evaluate_labels(truth, empty)["f1_50"] == 0.0
    one = squares(boxes=((0, 0, 5, 5),))
    pooled = summarize([image_counts(truth, truth), image_counts(one, np.zeros_like(one))])
    assert pooled["ap50"] == pytest.approx(3 / 4)  # TP 3, FN 1 over both images
    assert pooled["seg"] == pytest.approx(3 / 4)


def test_sparse_overlap_equals_brute_force_iou():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, (30, 30))
    pred = rng.integers(0, 5, (30, 30))
    ov = overlap(truth, pred)
    for g, p, iou in zip(ov.pairs_gt, ov.pairs_pred, ov.iou):
        a, b = truth == ov.gt_ids[g], pred == ov.pred_ids[p]
        assert iou == pytest.approx((a & b).sum() / (a | b).sum())
    assert len(ov.iou) == sum(
        ((truth == i) & (pred == j)).any() for i in range(1, 6) for j in range(1, 5)
    )


def test_cli_writes_json_and_csv(tmp_path):
    truth = squares()
    pred = truth.copy()
    pred[pred == 3] = 0
    for name, arr in {"t1": truth, "p1": truth, "t2": truth, "p2": pred}.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", arr)
    out = tmp_path / "eval"
    argv = ["evaluate", "--pred", str(tmp_path / "p1.tif"), str(tmp_path / "p2.tif")]
    argv += ["--truth", str(tmp_path / "t1.tif"), str(tmp_path / "t2.tif"), "-o", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["thresholds"]["0.5"]["tp"] == 5 and result["thresholds"]["0.5"]["fn"] == 1
    assert len(result["per_image"]) == 2
    csv = (out / "per_image.csv").read_text().splitlines()
    assert len(csv) == 3 and "f1_0.5" in csv[0]


def test_cli_mismatched_pairs_exit_2_naming_the_option(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", squares())
    code = main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "a.tif"),
            "--truth",
            str(tmp_path / "a.tif"),
            str(tmp_path / "a.tif"),
            "-o",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "--pred/--truth" in capsys.readouterr().err


def test_cli_missing_file_names_it(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", squares())
    missing = tmp_path / "nope.tif"
    argv = ["evaluate", "--pred", str(missing), "--truth", str(tmp_path / "a.tif")]
    assert main([*argv, "-o", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_reads_ome_zarr_label_stores(tmp_path):
    from grunet.io import read_image, write_image, write_labels

    truth = squares()
    tifffile.imwrite(tmp_path / "img.tif", (truth > 0).astype(np.uint8) * 200)
    store = write_image(tmp_path / "img.ome.zarr", read_image(tmp_path / "img.tif"))
    pred = truth.copy()
    pred[pred == 1] = 0
    write_labels(store, pred.astype(np.uint32)[None, None])
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    out = tmp_path / "eval"
    argv = ["evaluate", "--pred", str(store), "--truth", str(tmp_path / "truth.tif")]
    assert main([*argv, "-o", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["thresholds"]["0.5"]["tp"] == 2 and result["thresholds"]["0.5"]["fn"] == 1
