"""What a checkpoint segments: its task (instance or semantic), classes and input normalisation.

The task lives in the checkpoint's metadata so that every command and the workflow can follow the
model instead of asking the user. The contract (written by ``grunet train``, read everywhere):

``metadata["task"]``
    ``"instance"`` (default when absent: background / interior / boundary → cells) or
    ``"semantic"`` (N classes → a class map).
``metadata["classes"]``
    semantic only: one ``{"name": str, "colour": "#rrggbb" | None}`` per network output.
``metadata["ignore_index"]``
    semantic only: the label value that marks unlabelled pixels (never predicted), default 255.
``metadata["normalization"]``
    ``{"percentiles": [lo, hi]}`` (robust per-image range, the instance default) or
    ``{"mean": [...], "std": [...], "scale": s}``: per-channel ``(x / s - mean) / std`` with the
    statistics of the training set (natural RGB images, where a per-image stretch would change
    colours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INSTANCE = "instance"
SEMANTIC = "semantic"
TASKS = (INSTANCE, SEMANTIC)
DEFAULT_IGNORE_INDEX = 255


@dataclass(frozen=True)
class SemanticClass:
    """One output class of a semantic model."""

    name: str
    colour: str | None = None  # "#rrggbb"

    def rgb(self) -> tuple[int, int, int] | None:
        """The colour as 0-255 integers, or None."""
        if not self.colour:
            return None
        hex_digits = self.colour.lstrip("#")
        return tuple(int(hex_digits[i : i + 2], 16) for i in (0, 2, 4))


def model_task(metadata: dict) -> str:
    """The task a checkpoint was trained for; checkpoints without one are instance models."""
    task = metadata.get("task", INSTANCE)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} in checkpoint metadata; expected one of {TASKS}")
    return task


def semantic_classes(metadata: dict, n_outputs: int) -> list[SemanticClass]:
    """The classes of a semantic checkpoint (names default to ``class_<i>``)."""
    stored = metadata.get("classes") or []
    classes = []
    for i in range(n_outputs):
        entry = stored[i] if i < len(stored) else {}
        if isinstance(entry, str):
            entry = {"name": entry}
        classes.append(SemanticClass(str(entry.get("name", f"class_{i}")), entry.get("colour")))
    return classes


def ignore_index(metadata: dict) -> int:
    """The label value of unlabelled pixels for a semantic checkpoint."""
    return int(metadata.get("ignore_index", DEFAULT_IGNORE_INDEX))


def uses_mean_std(normalization: dict) -> bool:
    """True for fixed per-channel mean/std normalisation, False for per-image percentiles."""
    return "mean" in normalization and "std" in normalization


def normalize_mean_std(image: np.ndarray, normalization: dict) -> np.ndarray:
    """Apply ``(x / scale - mean) / std`` per channel to a ``(C, ...)`` array; float32."""
    image = np.asarray(image, dtype=np.float32)
    scale = np.float32(normalization.get("scale", 1.0))
    mean = np.asarray(normalization["mean"], dtype=np.float32)
    std = np.asarray(normalization["std"], dtype=np.float32)
    if mean.size != image.shape[0] or std.size != image.shape[0]:
        raise ValueError(
            f"normalization has {mean.size} channel statistics, image has {image.shape[0]} channels"
        )
    shape = (-1,) + (1,) * (image.ndim - 1)
    return (image / scale - mean.reshape(shape)) / np.maximum(std, 1e-6).reshape(shape)
