"""Instance segmentation quality: AP/F1 at IoU thresholds, matched IoU, and CTC SEG.

Definitions (per image, then pooled over images by summing counts):
- a predicted object *matches* a ground-truth object when their IoU >= t; matching is one-to-one
  (for t > 0.5 any overlap above t is unique; below, a maximum matching is found with
  :func:`scipy.optimize.linear_sum_assignment`).
- ``ap = TP / (TP + FP + FN)`` (the Data Science Bowl 2018 "AP" of one threshold),
  ``f1 = 2 TP / (2 TP + FP + FN)``, ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``.
- ``mean_matched_iou``: mean IoU of the pairs matched at t = 0.5.
- ``seg`` (Cell Tracking Challenge SEG): each ground-truth object scores the Jaccard index with the
  predicted object covering more than half of it, or 0 if none does; mean over all objects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from grunet.errors import InputError

THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


@dataclass
class Overlap:
    """Pairwise overlaps of the objects of two label images (only pairs that touch)."""

    gt_ids: np.ndarray  # (G,) ground-truth object ids
    pred_ids: np.ndarray  # (P,) predicted object ids
    gt_area: np.ndarray  # (G,) pixels per ground-truth object
    pred_area: np.ndarray  # (P,) pixels per predicted object
    pairs_gt: np.ndarray  # (K,) index into gt_ids of each overlapping pair
    pairs_pred: np.ndarray  # (K,) index into pred_ids
    intersection: np.ndarray  # (K,) pixels shared by the pair

    @property
    def iou(self) -> np.ndarray:
        union = self.gt_area[self.pairs_gt] + self.pred_area[self.pairs_pred] - self.intersection
        return self.intersection / np.maximum(union, 1)


def overlap(truth: np.ndarray, pred: np.ndarray) -> Overlap:
    """Contingency table of two label images of the same shape (0 = background), sparse.

    Example:
        >>> ov = overlap(np.array([[1, 1, 0]]), np.array([[2, 0, 0]]))
        >>> float(ov.iou[0])
        0.5
    """
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"label images differ in size: {truth.shape} vs {pred.shape}")
    gt_ids, gt_inv = np.unique(truth, return_inverse=True)
    pred_ids, pred_inv = np.unique(pred, return_inverse=True)
    table = sparse.coo_matrix(
        (np.ones(truth.size, dtype=np.int64), (gt_inv.ravel(), pred_inv.ravel())),
        shape=(gt_ids.size, pred_ids.size),
    ).tocsr()
    table.sum_duplicates()
    gt_area = np.asarray(table.sum(axis=1)).ravel()
    pred_area = np.asarray(table.sum(axis=0)).ravel()
    coo = table.tocoo()
    rows, cols, counts = coo.row, coo.col, coo.data
    keep_gt = gt_ids != 0
    keep_pred = pred_ids != 0
    # re-index without background
    gt_index = np.cumsum(keep_gt) - 1
    pred_index = np.cumsum(keep_pred) - 1
    sel = keep_gt[rows] & keep_pred[cols] & (counts > 0)
    return Overlap(
        gt_ids=gt_ids[keep_gt],
        pred_ids=pred_ids[keep_pred],
        gt_area=gt_area[keep_gt].astype(np.float64),
        pred_area=pred_area[keep_pred].astype(np.float64),
        pairs_gt=gt_index[rows[sel]],
        pairs_pred=pred_index[cols[sel]],
        intersection=counts[sel].astype(np.float64),
    )


def match(ov: Overlap, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of objects with IoU >= ``threshold``.

    Returns:
        (gt_index, pred_index, iou) of the matched pairs.
    """
    iou = ov.iou
    ok = iou >= threshold
    g, p, v = ov.pairs_gt[ok], ov.pairs_pred[ok], iou[ok]
    if np.unique(g).size == g.size and np.unique(p).size == p.size:
        return g, p, v
    # ambiguous (only possible for threshold <= 0.5): maximum matching, ties by IoU
    ug, gi = np.unique(g, return_inverse=True)
    up, pi = np.unique(p, return_inverse=True)
    cost = np.zeros((ug.size, up.size))
    cost[gi, pi] = -(1.0 + v)
    rows, cols = linear_sum_assignment(cost)
    good = cost[rows, cols] < 0
    rows, cols = rows[good], cols[good]
    return ug[rows], up[cols], -cost[rows, cols] - 1.0


def _rates(tp: int, fp: int, fn: int) -> dict:
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "ap": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
    }


def image_counts(
    truth: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> dict:
    """Raw counts of one image: TP/FP/FN per threshold, matched IoU sum, SEG sum.

    Combine images with :func:`summarize` (pooled counts) or turn one into metrics directly.
    """
    ov = overlap(truth, pred)
    n_gt, n_pred = ov.gt_ids.size, ov.pred_ids.size
    counts: dict = {"n_true": int(n_gt), "n_pred": int(n_pred), "thresholds": {}}
    for t in thresholds:
        g, _, v = match(ov, t)
        counts["thresholds"][float(t)] = {
            "tp": int(g.size),
            "fp": int(n_pred - g.size),
            "fn": int(n_gt - g.size),
            "iou_sum": float(v.sum()),
        }
    covering = ov.intersection > 0.5 * ov.gt_area[ov.pairs_gt]
    counts["seg_sum"] = float(ov.iou[covering].sum())
    return counts


def without_objects_on(pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Predicted labels minus the objects lying mostly (over half their pixels) on ``mask``.

    Scores only what a mask excludes, e.g. the ordinary nuclei beside painted outliers.
    """
    if not mask.any():
        return pred
    ids, inside = np.unique(pred[mask], return_counts=True)
    sizes = np.bincount(pred.ravel().astype(np.int64))
    drop = ids[(ids > 0) & (2 * inside > sizes[ids])]
    return np.where(np.isin(pred, drop), 0, pred).astype(pred.dtype)


def summarize(counts: Sequence[dict] | dict) -> dict:
    """Metrics from one image's counts or pooled over several images' counts.

    Returns:
        ``{"n_images", "n_true", "n_pred", "seg", "mean_matched_iou", "ap50", "f1_50",
        "thresholds": {t: {tp, fp, fn, ap, f1, precision, recall}}}``.
    """
    if isinstance(counts, dict):
        counts = [counts]
    n_true = sum(c["n_true"] for c in counts)
    n_pred = sum(c["n_pred"] for c in counts)
    out: dict = {"n_images": len(counts), "n_true": n_true, "n_pred": n_pred, "thresholds": {}}
    thresholds = list(counts[0]["thresholds"]) if counts else list(THRESHOLDS)
    for t in thresholds:
        tp = sum(c["thresholds"][t]["tp"] for c in counts)
        fp = sum(c["thresholds"][t]["fp"] for c in counts)
        fn = sum(c["thresholds"][t]["fn"] for c in counts)
        out["thresholds"][t] = _rates(tp, fp, fn)
        if t == 0.5:
            iou_sum = sum(c["thresholds"][t]["iou_sum"] for c in counts)
            out["mean_matched_iou"] = iou_sum / tp if tp else 0.0
    out["seg"] = sum(c["seg_sum"] for c in counts) / n_true if n_true else 1.0
    if 0.5 in out["thresholds"]:
        out["ap50"] = out["thresholds"][0.5]["ap"]
        out["f1_50"] = out["thresholds"][0.5]["f1"]
    return out


def evaluate_labels(
    truth: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> dict:
    """All metrics of one pair of instance label images (same shape, 0 = background).

    Example:
        >>> evaluate_labels(np.array([[1, 1, 0, 2]]), np.array([[5, 5, 0, 0]]))["f1_50"]
        0.6666666666666666
    """
    return summarize(image_counts(truth, pred, thresholds))


def read_label_image(path: str | Path) -> np.ndarray:
    """Instance labels from a TIFF or an OME-Zarr store (its ``labels/cells``), squeezed."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    name = path.name.lower()
    try:
        if name.endswith((".zarr", ".zarr/")) or path.is_dir():
            from grunet.io import read_labels

            return np.asarray(read_labels(path)).squeeze()
        import tifffile

        labels = np.asarray(tifffile.imread(path)).squeeze()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(path, f"cannot read labels ({type(err).__name__}: {err})") from None
    return checked_labels(labels, path)


def checked_labels(labels: np.ndarray, path: str | Path) -> np.ndarray:
    """Refuse label images that are not non-negative whole numbers."""
    if labels.dtype.kind not in "iuf":
        raise InputError(path, f"labels must be integers, got pixel type {labels.dtype}")
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise InputError(path, "labels must be whole numbers (found fractional values)")
    if labels.size and labels.min() < 0:
        raise InputError(
            path,
            f"label image has negative values (min {labels.min()}); use 0 for background "
            "and positive ids for cells",
        )
    return labels


def evaluate_files(
    pred_paths: Sequence[str | Path],
    truth_paths: Sequence[str | Path],
    out_dir: str | Path,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict:
    """Evaluate predicted label files against ground-truth files (paired in order).

    Writes ``out_dir/metrics.json`` (overall + per image) and ``out_dir/per_image.csv``.

    Returns:
        The overall metrics (pooled over images) with ``"per_image"`` and ``"mean_per_image"``.
    """
    import pandas as pd

    if len(pred_paths) != len(truth_paths):
        raise InputError(
            "--pred/--truth",
            f"need one truth file per prediction, got {len(pred_paths)} and {len(truth_paths)}",
        )
    out_dir = Path(out_dir)
    rows, all_counts = [], []
    for p, t in zip(pred_paths, truth_paths):
        pred, truth = read_label_image(p), read_label_image(t)
        if pred.shape != truth.shape:
            raise InputError(p, f"shape {pred.shape} differs from the truth {t} ({truth.shape})")
        counts = image_counts(truth, pred, thresholds)
        all_counts.append(counts)
        rows.append({"pred": str(p), "truth": str(t), **flat_metrics(summarize(counts))})
    result = summarize(all_counts)
    table = pd.DataFrame(rows)
    metric_cols = [c for c in table.columns if c not in ("pred", "truth")]
    result["mean_per_image"] = table[metric_cols].mean(numeric_only=True).to_dict()
    result["per_image"] = rows
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(jsonable(result), indent=2))
    table.to_csv(out_dir / "per_image.csv", index=False)
    return result


def flat_metrics(summary: dict) -> dict:
    """One flat row: n_true, n_pred, seg, mean_matched_iou, ap/f1/precision/recall at each t."""
    row = {k: summary[k] for k in ("n_true", "n_pred", "seg", "mean_matched_iou")}
    for t, m in summary["thresholds"].items():
        for key in ("ap", "f1", "precision", "recall"):
            row[f"{key}_{t:g}"] = m[key]
    return row


def jsonable(obj):
    """Turn float dict keys and numpy scalars into JSON-friendly values."""
    if isinstance(obj, dict):
        return {(f"{k:g}" if isinstance(k, float) else k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
