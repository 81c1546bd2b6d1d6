"""Training of ``task: semantic`` models: N-class losses with an ignore index, the loop, outputs.

Called by :func:`grunet.train.train` when the config's ``task`` is ``semantic``. Outputs in
``out_dir`` match the instance path: ``best.pt`` (the epoch with the best val mIoU), ``last.pt``
(with resume state), ``log.csv``, ``curves.png``, ``val_metrics.json`` (+ the best epoch's
confusion matrix as ``confusion.csv``).

The checkpoint metadata follows :mod:`grunet.task`: ``task``, ``classes``, ``ignore_index``,
``normalization`` (per-channel mean/std of the training images, ``scale`` 255), and
``input_scale``: the factor images are resized by before the network (class scores are
brought back to the image grid before the argmax).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from grunet import semantic_data as sd
from grunet.checkpoint import load_checkpoint, save_checkpoint
from grunet.errors import ConfigError
from grunet.evaluate import jsonable
from grunet.export import run_provenance, write_sidecar
from grunet.model import GRUUNet
from grunet.runtime import autocast, autocast_dtype, select_device
from grunet.semantic_metrics import confusion_matrix, semantic_metrics, write_confusion_csv
from grunet.task import SEMANTIC
from grunet.train_loop import EpochLoop

SEMANTIC_LOSSES = ("ce", "focal", "ce_dice")


# ------------------------------------------------------------------------------------- losses
def semantic_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    name: str = "ce",
    weights: torch.Tensor | None = None,
    ignore_index: int = 255,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Loss of ``(B, N, Y, X)`` logits against ``(B, Y, X)`` class indices.

    ``ce``: class-weighted cross-entropy, weighted mean over labelled pixels; ``focal``: the
    multi-class focal loss with the class weights as alpha; ``ce_dice``: ce + (1 - soft Dice
    averaged over the classes present in prediction or truth). Pixels labelled ``ignore_index``
    take no part (zero gradient); a batch without labelled pixels gives a zero loss.
    """
    if name not in SEMANTIC_LOSSES:
        raise ConfigError(f"loss.name: unknown loss {name!r} for task semantic; {SEMANTIC_LOSSES}")
    n = logits.shape[1]
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    if weights is None:
        weights = torch.ones(n, dtype=logits.dtype)
    w = weights.to(logits.device)[safe] * valid
    denom = w.sum()
    if denom <= 0:
        return logits.sum() * 0.0
    logp_all = F.log_softmax(logits, dim=1)
    logp = logp_all.gather(1, safe[:, None])[:, 0]
    pixel = -((1.0 - logp.exp()).pow(gamma)) * logp if name == "focal" else -logp
    loss = (w * pixel).sum() / denom
    if name == "ce_dice":
        prob = logp_all.exp() * valid[:, None]
        onehot = F.one_hot(safe, n).permute(0, 3, 1, 2).to(prob.dtype) * valid[:, None]
        inter = (prob * onehot).sum(dim=(0, 2, 3))
        total = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        present = onehot.sum(dim=(0, 2, 3)) > 0
        dice = (2 * inter + 1.0) / (total + 1.0)
        loss = loss + (1.0 - dice[present]).mean() if present.any() else loss
    return loss


# -------------------------------------------------------------------------------- prediction
@torch.no_grad()
def class_scores(
    model: GRUUNet,
    images: np.ndarray,
    mean: list[float],
    std: list[float],
    device,
    *,
    out_shape: tuple[int, int] | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Logits ``(B, N, Y, X)`` of (B, Y, X, C) uint8 images, resized to ``out_shape`` if given."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    x = ((x - m) / s).to(device).contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        logits = model(x).float()
    if out_shape is not None and tuple(logits.shape[-2:]) != tuple(out_shape):
        logits = F.interpolate(logits, size=tuple(out_shape), mode="bilinear", align_corners=False)
    return logits.cpu()


def _same_shape_groups(samples: list, size: int) -> list[list]:
    """Consecutive samples in groups of at most ``size`` whose images share a shape."""
    groups: list[list] = []
    for s in samples:
        if groups and len(groups[-1]) < size and groups[-1][0].image.shape == s.image.shape:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


# ------------------------------------------------------------------------------------ trainer
class SemanticTrainer(EpochLoop):
    """The semantic training loop (:class:`grunet.train_loop.EpochLoop`): one epoch =
    ``steps_per_epoch`` steps, then val mIoU on the full-resolution labels."""

    score_key = "mean_iou"

    def __init__(self, cfg: dict, train, val, classes: list[dict], out_dir: Path, device):
        self.train_samples, self.val_samples, self.classes = train, val, classes
        self.n = len(classes)
        self.ignore = int(cfg["ignore_index"])
        self._setup(cfg, out_dir, device, in_channels=int(cfg["in_channels"]), classes=self.n)
        self.mean, self.std = sd.channel_stats(train)
        self.weights = sd.class_weights(train, self.n, cfg["class_weighting"])
        self.weight_tensor = torch.tensor(self.weights, dtype=torch.float32)
        self.sampler = sd.SemanticPatchSampler(train, cfg, self.mean, self.std, self.rng)
        self._confusion = None  # of the latest validation, written for the best epoch

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        spec = self.cfg["loss"]
        return semantic_loss(
            logits,
            target,
            name=spec["name"],
            weights=self.weight_tensor,
            ignore_index=self.ignore,
            gamma=float(spec["gamma"]),
        )

    def train_step(self) -> float:
        self.model.train()
        x, y = self.sampler.batch(self.cfg["batch_size"])
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        y = y.to(self.device)
        with autocast(self.device, self.cfg["amp"]):
            logits = self.model(x)
        return self.optimise(self.loss(logits.float(), y))

    def validate_epoch(self) -> tuple[dict, float, dict]:
        """Metrics and loss of the val images at their files' resolution, and the log's val
        columns; the confusion matrix is kept for the best epoch's ``confusion.csv``."""
        confusion = np.zeros((self.n, self.n), dtype=np.int64)
        losses = []
        for group in _same_shape_groups(self.val_samples, 4):
            logits = class_scores(
                self.model,
                np.stack([s.image for s in group]),
                self.mean,
                self.std,
                self.device,
                out_shape=group[0].full_labels.shape,
                amp=self.cfg["amp"],
            )
            for s, lg in zip(group, logits):
                target = torch.from_numpy(s.full_labels.astype(np.int64))
                losses.append(float(self.loss(lg[None], target[None])))
                pred = lg.argmax(0).numpy()
                confusion += confusion_matrix(s.full_labels, pred, self.n, self.ignore)
        metrics = semantic_metrics(confusion, [c["name"] for c in self.classes])
        self._confusion = confusion
        columns = {
            "val_miou": metrics["mean_iou"],
            "val_global_acc": metrics["global_accuracy"],
            "val_class_acc": metrics["class_average_accuracy"],
        }
        return metrics, float(np.mean(losses)), columns

    def finish(self) -> None:
        self.write_val_metrics()

    # ---- outputs
    def metadata(self) -> dict:
        return {
            "grunet_train": True,
            "task": SEMANTIC,
            "classes": self.classes,
            "ignore_index": self.ignore,
            "normalization": {"mean": self.mean, "std": self.std, "scale": 255.0},
            "input_scale": float(self.cfg["data"]["input_scale"]),
            "class_weights": self.weights,
            "preset": self.cfg["model"].get("preset", "small"),
            "epoch": self.epoch,
            "epochs": self.cfg["epochs"],
            "steps": self.epoch * self.cfg["steps_per_epoch"],
            "loss": self.cfg["loss"]["name"],
            "data": self.cfg["data"].get("root"),
            "n_train_images": len(self.train_samples),
            "n_val_images": len(self.val_samples),
            "config": self.cfg,
        }

    def save(self, improved: bool) -> None:
        meta = self.metadata()
        meta["val"] = {k: v for k, v in self.history[-1].items() if k.startswith("val_")}
        if improved:
            meta_best = dict(meta, val_metrics=self.best["metrics"])
            save_checkpoint(self.out_dir / "best.pt", self.model, jsonable(meta_best))
            names = [c["name"] for c in self.classes]
            write_confusion_csv(self._confusion, names, self.out_dir / "confusion.csv")
        meta["resume"] = {**self.resume_state(), "best": json.dumps(jsonable(self.best))}
        save_checkpoint(self.out_dir / "last.pt", self.model, meta)
        self.write_log()
        plot_semantic_curves(self.history, self.out_dir / "curves.png")

    def resume(self) -> None:
        ckpt = load_checkpoint(self.out_dir / "last.pt")
        state = self.restore(ckpt.metadata)
        self.model.load_state_dict(ckpt.state_dict)
        self.best = json.loads(state["best"])

    def write_val_metrics(self) -> None:
        out = {"best_epoch": self.best.get("epoch"), "val": self.best.get("metrics", {})}
        self.write_val_metrics_file(out)


SEMANTIC_CURVES = {
    "mIoU": "val_miou",
    "global acc": "val_global_acc",
    "class-avg acc": "val_class_acc",
}


def plot_semantic_curves(history: list[dict], path: Path) -> None:
    """Loss, val mIoU / accuracies and learning rate per epoch as a PNG."""
    from grunet.train import plot_curves

    plot_curves(history, path, SEMANTIC_CURVES)


def train_semantic(
    cfg: dict,
    out_dir: Path,
    *,
    resume: bool,
    device: str,
    stop_after: int | None,
    images: Sequence[str | Path] | None = None,
    labels: Sequence[str | Path] | None = None,
) -> dict:
    """Train a semantic model from a merged config (see :func:`grunet.train.train`).

    The data come from ``data.root`` (images/, labels/, manifest.csv with its splits) or, as in
    the workflow, from explicit ``images``/``labels`` pairs, of which a seeded
    ``data.val_fraction`` (at least one) is held out for validation.
    """
    d = cfg["data"]
    if images or labels:
        if not images or not labels or len(images) != len(labels):
            raise ConfigError(
                f"--images/--labels: give one class-label file per image "
                f"({len(images or [])} images, {len(labels or [])} labels)"
            )
        if len(images) < 2:
            raise ConfigError("--images: need at least two images (train + val)")
        d["root"] = None
    elif not d["root"]:
        raise ConfigError("data.root: task semantic needs a dataset folder (images/, labels/)")
    if cfg["loss"]["name"] not in SEMANTIC_LOSSES:
        raise ConfigError(
            f"loss.name: {cfg['loss']['name']!r} is an instance loss; for task semantic choose "
            f"one of {SEMANTIC_LOSSES}"
        )
    ignore = int(cfg["ignore_index"])
    classes = sd.resolve_classes(cfg["classes"], d["root"], ignore)
    cfg["classes"] = classes
    channels = int(cfg["in_channels"])
    scale = float(d["input_scale"])
    if not 0 < scale <= 4:
        raise ConfigError(f"data.input_scale must be in (0, 4], got {scale}")
    opts = {
        "n_classes": len(classes),
        "ignore_index": ignore,
        "channels": channels,
        "input_scale": scale,
    }
    if images:
        from grunet.measure import sample_name
        from grunet.train import hold_out

        named = [(sample_name(i), i, lab) for i, lab in zip(images, labels)]
        samples = sd.load_pairs(named, **opts)
        train_set, val = hold_out(samples, float(d["val_fraction"]), cfg["seed"])
        d["files"] = {"train": [s.name for s in train_set], "val": [s.name for s in val]}
    else:
        train_set = sd.load_split(d["root"], d["train_split"], limit=d["limit_train"], **opts)
        val = sd.load_split(d["root"], d["val_split"], limit=d["limit_val"], **opts)
    dev = select_device(device)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    trainer = SemanticTrainer(cfg, train_set, val, classes, out_dir, dev)
    if resume:
        trainer.resume()
    tqdm.write(
        f"semantic training on {dev} (autocast {autocast_dtype(dev) if cfg['amp'] else None}), "
        f"{len(classes)} classes, {len(train_set)} train / {len(val)} val images at scale "
        f"{scale}, epoch {trainer.epoch}/{cfg['epochs']}",
        file=sys.stderr,
    )
    return trainer.fit(stop_after=stop_after)


def export_semantic_model(
    run_dir: str | Path, dest: str | Path, *, command: str, notes: dict | None = None
) -> dict:
    """Ship a semantic run's ``best.pt`` as a small checkpoint plus a JSON sidecar.

    The checkpoint keeps what inference needs (task, classes, ignore index, mean/std
    normalisation, input scale) and what provenance needs (data, epochs, val metrics, config,
    the command); ``dest.json`` repeats it with the file's sha256 and size.
    """
    ckpt, log, provenance = run_provenance(run_dir)
    meta, cfg = ckpt.metadata, ckpt.metadata["config"]
    shipped = {
        **provenance,
        "task": SEMANTIC,
        "classes": meta["classes"],
        "ignore_index": meta["ignore_index"],
        "normalization": meta["normalization"],
        "input_scale": meta.get("input_scale", 1.0),
        "loss": cfg["loss"]["name"],
        "class_weighting": cfg["class_weighting"],
        "class_weights": meta.get("class_weights"),
        "val_metrics": meta.get("val_metrics"),
        "log": [{k: float(v) for k, v in row.items()} for row in log],
        "command": command,
        "config": cfg,
        **(notes or {}),
    }
    shipped = jsonable(shipped)
    sha = save_checkpoint(dest, ckpt.build_model(), shipped)
    return write_sidecar(dest, sha, shipped)
