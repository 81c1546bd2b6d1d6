"""Semantic segmentation quality: confusion matrix, pixel accuracies, per-class and mean IoU.

Definitions (pixels whose true label is the ignore index are left out everywhere):
- ``confusion[t, p]``: pixels of true class ``t`` predicted as class ``p``; pooled over images
  by summing matrices.
- ``global_accuracy = trace / total``: share of labelled pixels predicted right.
- ``class_accuracy[c] = confusion[c, c] / row_sum[c]`` (recall of class ``c``); its mean over the
  classes that occur in the truth is ``class_average_accuracy``.
- ``iou[c] = confusion[c, c] / (row_sum[c] + col_sum[c] - confusion[c, c])``. A class absent
  from both truth and prediction has no IoU (nan) and is left out of ``mean_iou``; a class that
  is only predicted (false positives) scores 0.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(
    truth: np.ndarray, pred: np.ndarray, n_classes: int, ignore_index: int | None = 255
) -> np.ndarray:
    """``(N, N)`` int64 counts, rows = truth, columns = prediction; ignored pixels left out.

    Example:
        >>> confusion_matrix(np.array([0, 1, 255]), np.array([0, 0, 1]), 2).tolist()
        [[1, 0], [1, 0]]
    """
    truth = np.asarray(truth).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {pred.size}")
    keep = truth != ignore_index if ignore_index is not None else np.ones(truth.size, bool)
    truth, pred = truth[keep], pred[keep]
    bad_truth = (truth < 0) | (truth >= n_classes)
    if bad_truth.any():
        raise ValueError(f"true label {int(truth[bad_truth][0])} outside 0..{n_classes - 1}")
    bad_pred = (pred < 0) | (pred >= n_classes)
    if bad_pred.any():
        raise ValueError(f"predicted class {int(pred[bad_pred][0])} outside 0..{n_classes - 1}")
    counts = np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU per class; nan for a class absent from both truth and prediction."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall per class; nan for a class absent from the truth."""
    confusion = np.asarray(confusion, dtype=np.float64)
    rows = confusion.sum(axis=1)
    return np.where(rows > 0, np.diag(confusion) / np.where(rows > 0, rows, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def semantic_metrics(confusion: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Global / class-average accuracy, per-class IoU and mIoU of a confusion matrix.

    Example:
        >>> m = semantic_metrics(np.array([[3, 1], [0, 4]]))
        >>> round(m["mean_iou"], 3), m["global_accuracy"]
        (0.775, 0.875)
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    n = confusion.shape[0]
    names = list(class_names) if class_names else [f"class_{i}" for i in range(n)]
    total = int(confusion.sum())
    iou = per_class_iou(confusion)
    acc = per_class_accuracy(confusion)
    return {
        "n_pixels": total,
        "global_accuracy": float(np.trace(confusion) / total) if total else float("nan"),
        "class_average_accuracy": _nanmean(acc),
        "mean_iou": _nanmean(iou),
        "n_classes_scored": int((~np.isnan(iou)).sum()),
        "per_class": {
            name: {
                "iou": _none_if_nan(iou[i]),
                "accuracy": _none_if_nan(acc[i]),
                "true_pixels": int(confusion[i].sum()),
                "predicted_pixels": int(confusion[:, i].sum()),
            }
            for i, name in enumerate(names)
        },
    }


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def write_confusion_csv(confusion: np.ndarray, class_names: list[str], path) -> None:
    """Confusion matrix as CSV: first column the true class, one column per predicted class."""
    from grunet.atomic import atomic_output

    lines = ["true\\predicted," + ",".join(class_names)]
    for name, row in zip(class_names, np.asarray(confusion)):
        lines.append(name + "," + ",".join(str(int(v)) for v in row))
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def plot_confusion(confusion: np.ndarray, class_names: list[str], path) -> None:
    """Row-normalised confusion matrix (share of each true class) as a PNG heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from grunet.atomic import atomic_output

    confusion = np.asarray(confusion, dtype=np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    n = len(class_names)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (share of true class)")
    if n <= 20:
        for t in range(n):
            for p in range(n):
                if share[t, p] >= 0.005:
                    colour = "white" if share[t, p] > 0.5 else "black"
                    ax.text(
                        p,
                        t,
                        f"{share[t, p]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
