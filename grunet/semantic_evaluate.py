"""``grunet evaluate --semantic``: class maps against class-index truth, pooled over images.

Writes ``metrics.json`` (global / class-average accuracy, per-class IoU, mIoU with the ignore
index left out; overall and per image), ``per_image.csv``, ``confusion.csv`` and
``confusion.png``. Definitions: :mod:`grunet.semantic_metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grunet.errors import CheckpointError, InputError
from grunet.evaluate import jsonable
from grunet.semantic_metrics import (
    confusion_matrix,
    plot_confusion,
    semantic_metrics,
    write_confusion_csv,
)
from grunet.task import SEMANTIC, ignore_index, model_task, semantic_classes


def checkpoint_task(model) -> tuple[str, object]:
    """(task, checkpoint) of a checkpoint path, shipped-model name or loaded checkpoint."""
    from grunet.checkpoint import Checkpoint, load_checkpoint

    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    try:
        return model_task(ckpt.metadata), ckpt
    except ValueError as err:
        raise CheckpointError(f"{ckpt.path}: {err}") from None


def require_task(model, task: str) -> object:
    """The loaded checkpoint if it is a ``task`` model; else a CheckpointError saying which
    evaluator fits it."""
    found, ckpt = checkpoint_task(model)
    if found != task:
        other = "--semantic" if found == SEMANTIC else "the instance evaluator (no --semantic)"
        raise CheckpointError(
            f"{ckpt.path}: is {'an' if found == 'instance' else 'a'} {found} model, but the "
            f"{task} evaluator was asked for; evaluate its outputs with {other}"
        )
    return ckpt


def read_class_map(path: str | Path) -> np.ndarray:
    """A 2D class map (PNG/TIFF, or an OME-Zarr store's ``labels/classes``) as an array."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    try:
        if path.name.lower().endswith(".zarr") or path.is_dir():
            from grunet.io import read_labels

            arr = np.asarray(read_labels(path, "classes")).squeeze()
        else:
            from grunet.semantic_data import _read_array

            arr = _read_array(path)
            if arr.ndim == 3 and arr.shape[-1] in (3, 4) and np.all(arr[..., :1] == arr[..., :3]):
                arr = arr[..., 0]
            arr = arr.squeeze()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(path, f"cannot read class map ({type(err).__name__}: {err})") from None
    if arr.dtype.kind not in "iu":
        raise InputError(path, f"class maps must be integers, got pixel type {arr.dtype}")
    return arr


def evaluate_semantic_files(
    pred_paths: Sequence[str | Path],
    truth_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model=None,
    class_names: Sequence[str] | None = None,
    n_classes: int | None = None,
    ignore: int | None = None,
) -> dict:
    """Evaluate predicted class maps against truth class maps (paired in order).

    Args:
        model: a semantic checkpoint (path, shipped name or loaded) giving the classes and the
            ignore index; an instance checkpoint is an error.
        class_names, n_classes: the classes without a checkpoint; neither: N is the largest
            class value seen + 1.
        ignore: label value left out of every metric (default: the checkpoint's, else 255).

    Returns:
        The pooled metrics with ``"confusion"`` and ``"per_image"``.
    """
    import pandas as pd

    if len(pred_paths) != len(truth_paths):
        raise InputError(
            "--pred/--truth",
            f"need one truth file per prediction, got {len(pred_paths)} and {len(truth_paths)}",
        )
    if model is not None:
        ckpt = require_task(model, SEMANTIC)
        meta = ckpt.metadata
        names = [c.name for c in semantic_classes(meta, ckpt.config.classes)]
        ignore = ignore_index(meta) if ignore is None else ignore
    else:
        ignore = 255 if ignore is None else ignore
        names = list(class_names) if class_names else None
    pairs = []
    for p, t in zip(pred_paths, truth_paths):
        pred, truth = read_class_map(p), read_class_map(t)
        if pred.shape != truth.shape:
            raise InputError(p, f"shape {pred.shape} differs from the truth {t} ({truth.shape})")
        pairs.append((p, t, pred, truth))
    if names is None:
        n = n_classes or 1 + max(
            max(int(a[a != ignore].max(initial=0)) for a in (pred, truth))
            for _, _, pred, truth in pairs
        )
        names = [f"class_{i}" for i in range(n)]
    n = len(names)
    total = np.zeros((n, n), dtype=np.int64)
    rows = []
    for p, t, pred, truth in pairs:
        _check_values(truth, n, ignore, t, "true label")
        _check_values(pred, n, None, p, "predicted class")
        cm = confusion_matrix(truth, pred, n, ignore)
        total += cm
        m = semantic_metrics(cm, names)
        rows.append(
            {
                "pred": str(p),
                "truth": str(t),
                "global_accuracy": m["global_accuracy"],
                "class_average_accuracy": m["class_average_accuracy"],
                "mean_iou": m["mean_iou"],
                **{f"iou_{k}": v["iou"] for k, v in m["per_class"].items()},
            }
        )
    result = semantic_metrics(total, names)
    result.update(task=SEMANTIC, n_images=len(pairs), ignore_index=ignore)
    result["confusion"] = total.tolist()
    result["per_image"] = rows
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(jsonable(result), indent=2))
    pd.DataFrame(rows).to_csv(out_dir / "per_image.csv", index=False)
    write_confusion_csv(total, names, out_dir / "confusion.csv")
    plot_confusion(total, names, out_dir / "confusion.png")
    return result


def _check_values(arr: np.ndarray, n: int, ignore: int | None, path, what: str) -> None:
    values = np.unique(arr)
    bad = values[(values >= n) & (values != (-1 if ignore is None else ignore))]
    if bad.size:
        allowed = f"0..{n - 1}" + (f" or the ignore index {ignore}" if ignore is not None else "")
        raise InputError(path, f"{what} value {int(bad[0])} is not {allowed}")
