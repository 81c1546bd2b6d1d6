"""Train GRUU-Net on annotated images: patch dataset, augmentation, loss, validation, checkpoints
(the epoch loop itself, shared with semantic training, is :mod:`grunet.train_loop`).

Outputs of :func:`train` in ``out_dir``:
- ``best.pt``: weights of the epoch with the best validation instance F1@IoU0.5 (plain
  :func:`grunet.checkpoint.save_checkpoint` file with metrics and segmentation thresholds),
- ``last.pt``: the latest epoch; its metadata's ``"resume"`` entry holds optimizer, scheduler,
  RNG states and history, so ``resume=True`` continues exactly where a stopped run ended,
- ``log.csv`` (one row per epoch), ``curves.png``, ``val_metrics.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from grunet import augment
from grunet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from grunet.errors import ConfigError, InputError
from grunet.evaluate import image_counts, jsonable, summarize
from grunet.export import run_provenance, write_sidecar
from grunet.model import GRUUNet
from grunet.preprocess import (
    DEFAULT_PERCENTILES,
    contact_mask,
    median_diameter,
    normalize,
    percentile_range,
    rescale_pair,
    targets_from_labels,
)
from grunet.runtime import autocast, autocast_dtype, select_device
from grunet.segmentation import instances_from_probabilities
from grunet.task import SEMANTIC, TASKS
from grunet.train_loop import EpochLoop

DEFAULTS: dict = {
    # "instance" (background / interior / boundary → cells) or "semantic" (N classes → a class
    # map; see grunet.semantic_train and grunet.task)
    "task": "instance",
    # semantic: class names or {name, colour} mappings, or a classes.csv path; None reads
    # <data.root>/classes.csv. The model's head gets one output per class.
    "classes": None,
    "in_channels": 3,  # semantic: image channels (RGB = 3); instance models take model.in_channels
    "ignore_index": 255,  # semantic: label value of unlabelled pixels (no loss, not scored)
    "class_weighting": "none",  # semantic: none | inverse | median_frequency (SegNet)
    "model": {"preset": "small"},  # preset name; other keys override preset fields
    "init": None,  # checkpoint whose weights start the training (fine-tuning); None: random
    "data": {
        "root": None,  # folder with images/, labels/, manifest.csv (column `split`)
        # more dataset folders (same layout) whose `train_split` rows join the training images
        "extra_train_roots": [],
        "train_split": "train",
        "val_split": "val",
        "limit_train": None,  # use only the first N training images (demo/tests)
        "limit_val": None,
        "crop_val": None,  # crop val images to at most N x N (demo/tests)
        # also score a copy of each val image with cytoplasm glow (augment.glow_level; seeded):
        # best.pt is then picked by a criterion that sees glow, which clean val images lack
        "val_glow": False,
        "val_fraction": 0.2,  # held-out share when images are given explicitly
        "files": None,  # set by --images/--labels (recorded for provenance)
        "percentiles": list(DEFAULT_PERCENTILES),
        "boundary_width": 2,
        "contact_radius": 3,  # pixels with two cells this close are "contact" (loss.contact_weight)
        # Object scale. rescale: each image is resized so that its median nucleus diameter (from
        # its labels) is object_diameter, the canonical diameter D0 the model works at (stored
        # in the checkpoint as metadata "object_diameter"); val images too. object_diameter None:
        # the init checkpoint's, else the median of the training images' median diameters.
        "rescale": True,
        "object_diameter": None,
        # semantic: images are resized by this factor for training and prediction (class scores
        # go back to the image grid before the argmax; val is scored on the files' labels)
        "input_scale": 1.0,
    },
    "patch_size": 256,
    "batch_size": 4,
    "epochs": 20,
    "steps_per_epoch": 100,
    "lr": 2e-3,
    "min_lr_fraction": 0.01,  # cosine decays to lr * this at the last step
    "weight_decay": 1e-4,
    "warmup_steps": 100,
    "grad_clip": 1.0,
    "loss": {
        "name": None,  # instance: wce (default) | focal; semantic: ce (default) | focal | ce_dice
        "class_weights": [1.0, 1.0, 2.0],
        "gamma": 2.0,
        # extra weight on pixels where two cells are within data.contact_radius: ×(1 + this).
        # 8 lifted dsb2018 val F1@0.5 from 0.83 to ~0.90 by splitting touching nuclei.
        "contact_weight": 8.0,
    },
    "foreground_bias": 0.7,  # share of patches centred on a foreground pixel
    "augment": {
        "flip": True,
        "rot90": True,
        "scale_jitter": [0.7, 1.4],  # object scale factor around D0 (log-uniform); [1, 1]: none
        "scale": [0.7, 1.3],  # intensity gain range (log-uniform)
        "shift": [-0.1, 0.1],  # intensity offset range, relative to the patch's signal
        "gamma": [0.7, 1.4],
        "noise": 0.03,  # max std of additive Gaussian noise, relative to the patch's signal
        "p_intensity": 0.8,  # share of patches with intensity augmentation (all below)
        "p_blur": 0.2,  # share of those blurred, Gaussian sigma drawn from `blur`
        "blur": [0.5, 1.5],
        # outliers: this share gets gain `outlier_gain` instead of `scale` (ordinary nuclei at
        # ~0.1 of the range) plus up to `outlier_nuclei` saturated nuclei at `outlier_level`
        "p_outlier": 0.3,
        "outlier_gain": [0.08, 0.6],
        "outlier_nuclei": 4,
        "outlier_level": [0.8, 1.3],
        # dim textured glow around nuclei (cytoplasm), labelled background: this share of
        # patches, at `glow_level` x the nuclei's median brightness
        "p_glow": 0.0,
        "glow_level": [0.1, 0.45],
        # ...each cell body also reaching up to this many nucleus diameters to a side of its own
        # (eccentric nuclei: cytoplasm crescents on one side); 0: all bodies shifted alike
        "glow_eccentric": 0.0,
        # dark spots (nucleoli) inside the nuclei of this share of patches
        "p_nucleoli": 0.0,
        # bright clumps on a dimmer ground (condensed chromatin) in the nuclei of this share
        "p_chromatin": 0.0,
        # overexposure: in this share of patches the brightest `saturate_share` of the nucleus
        # pixels are clipped to one value, the top of the range (a camera past its ceiling)
        "p_saturate": 0.0,
        "saturate_share": [0.02, 0.4],
        # uneven background: this share of patches gets a smooth additive ramp up to a level
        # drawn from [0, background_level] × the patch's signal (99th percentile)
        "p_background": 0.0,
        "background_level": 0.6,
        # photon noise: this share of patches is recorded as if its signal (99th percentile)
        # had collected a number of photons drawn log-uniformly from `shot_photons`
        "p_shot": 0.0,
        "shot_photons": [10.0, 300.0],
        # low magnification: this share of patches is shrunk by a factor drawn log-uniformly
        # from `lowres_factor` and resized back, as prediction upscales images of tiny nuclei
        "p_lowres": 0.0,
        "lowres_factor": [1.5, 4.0],
        # semantic (natural images): random factors in 1 ± these; flip is horizontal only and
        # scale_jitter is the random rescale range before the crop
        "colour_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2},
    },
    "amp": True,
    "channels_last": True,
    # exponential moving average of the weights (e.g. 0.998: a half-life of ~350 steps); 0: off.
    # Validation, best.pt and last.pt then hold the averaged weights (the raw ones resume).
    "ema_decay": 0.0,
    "seed": 0,
    "threads": None,  # torch.set_num_threads; None leaves torch's default
    "segmentation": {"seed_threshold": 0.5, "foreground_threshold": 0.5},
    "tune_thresholds": False,  # grid-search the segmentation thresholds on the train split
    "tune_images": 40,  # ... on this many training images (seeded random subset; None: all)
}


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict:
    """Training config from a YAML file merged over :data:`DEFAULTS` (unknown keys are errors)."""
    import yaml

    user: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "config file not found")
        try:
            user = yaml.safe_load(path.read_text()) or {}
        except UnicodeDecodeError:
            raise InputError(path, "not a text (YAML) config file") from None
        except yaml.YAMLError as err:
            reason = str(err).splitlines()[0]
            raise InputError(path, f"not valid YAML ({reason})") from None
        if not isinstance(user, dict):
            raise InputError(path, "expected a mapping of config keys")
    cfg = _merge(DEFAULTS, {**user, **(overrides or {})}, "")
    if path is not None:
        data = cfg["data"]
        data["root"] = _resolve_beside(path, data["root"])
        data["extra_train_roots"] = [_resolve_beside(path, r) for r in data["extra_train_roots"]]
    return cfg


def _resolve_beside(config_path: Path, folder: str | None) -> str | None:
    """A relative dataset folder: beside the config file if it exists there, else from the cwd."""
    if not folder or Path(folder).is_absolute():
        return folder
    beside = (config_path.parent / folder).resolve()
    return str(beside if beside.exists() else Path(folder).resolve())


def _merge(base: dict, user: dict, prefix: str) -> dict:
    out = json.loads(json.dumps(base))
    for key, value in user.items():
        if key not in base:
            raise ConfigError(f"unknown training config key '{prefix}{key}'")
        if isinstance(base[key], dict) and key != "model":
            if not isinstance(value, dict):
                raise ConfigError(f"training config key '{prefix}{key}' must be a mapping")
            out[key] = _merge(base[key], value, f"{prefix}{key}.")
        else:
            _check_type(base[key], value, f"{prefix}{key}")
            out[key] = value
    return out


def _check_type(default, value, key: str) -> None:
    """A value must have its default's kind (number, flag, text, list); None defaults are free."""
    if default is None:
        return
    kinds = [
        (bool, "true or false"),
        ((int, float), "a number"),
        (str, "text"),
        (list, "a list"),
    ]
    for kind, words in kinds:
        if isinstance(default, kind):
            wrong_bool = kind is not bool and isinstance(value, bool)
            if not isinstance(value, kind) or wrong_bool:
                raise ConfigError(f"training config key '{key}' must be {words}, got {value!r}")
            return


def hold_out(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): a seeded random ``fraction`` of ``samples`` (at least one) held out."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, round(len(samples) * fraction))
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]


# --------------------------------------------------------------------------------------- data
@dataclass
class Sample:
    """One annotated 2D image in memory: normalised image, classes, instance labels."""

    name: str
    image: np.ndarray  # (Y, X) float32, normalised
    targets: np.ndarray  # (Y, X) uint8 classes 0/1/2
    labels: np.ndarray  # (Y, X) instance ids
    foreground: np.ndarray = field(repr=False, default=None)  # (K,) flat indices of fg pixels
    contact: np.ndarray = field(repr=False, default=None)  # (Y, X) bool: cells touch here
    diameter: float | None = None  # median nucleus diameter (px) of its labels, None: no cells
    scale: float = 1.0  # resize factor that brings it to the model's object diameter


def _read_2d(path: Path, what: str) -> list[np.ndarray]:
    """2D planes of a TIFF or OME-Zarr image/labels file (or a ``demo:<name>`` image)."""
    if str(path).startswith("demo:"):
        from grunet.demo import resolve_demo

        path = resolve_demo(str(path))[0]
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.suffix == ".zarr" or path.is_dir():
        from grunet import io as gio

        if what == "labels":
            arr = np.asarray(gio.read_labels(path))[:, 0]  # (T, Z, Y, X)
        else:
            arr = np.asarray(gio.open_store(path).data)[:, 0]  # first channel
        return list(arr.reshape(-1, *arr.shape[-2:]))
    import tifffile

    arr = np.asarray(tifffile.imread(path))
    if arr.ndim == 2:
        return [arr]
    if what == "image" and arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return [arr[..., 0]]  # RGB(A) with identical channels
    return list(arr.reshape(-1, *arr.shape[-2:]))


def make_samples(
    image_paths: Sequence[str | Path],
    label_paths: Sequence[str | Path],
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    boundary_width: int = 2,
    contact_radius: int = 3,
    crop: int | None = None,
) -> list[Sample]:
    """Load image/label pairs into memory, normalised, with training targets and the median
    nucleus diameter of their labels (the object scale, see :func:`rescaled`)."""
    if len(image_paths) != len(label_paths):
        raise InputError("--images/--labels", "need one label file per image")
    samples = []
    for ip, lp in zip(image_paths, label_paths):
        ip, lp = Path(ip), Path(lp)
        images, labels = _read_2d(ip, "image"), _read_2d(lp, "labels")
        if len(images) != len(labels):
            raise InputError(lp, f"{len(labels)} label planes for {len(images)} image planes")
        for k, (img, lab) in enumerate(zip(images, labels)):
            if img.shape != lab.shape:
                raise InputError(lp, f"labels {lab.shape} differ from image {img.shape}")
            if crop:
                img, lab = img[:crop, :crop], lab[:crop, :crop]
            lo, hi = percentile_range(img, tuple(percentiles))
            name = ip.name.split(".")[0] + (f"[{k}]" if len(images) > 1 else "")
            lab = np.asarray(lab).astype(np.int32)
            samples.append(
                Sample(
                    name=name,
                    image=normalize(img, lo, hi),
                    targets=targets_from_labels(lab, boundary_width),
                    labels=lab,
                    foreground=np.flatnonzero(lab),
                    contact=contact_mask(lab, contact_radius),
                    diameter=median_diameter(lab),
                )
            )
    return samples


def dataset_paths(
    cfg: dict, split: str, root: str | Path | None = None
) -> tuple[list[Path], list[Path]]:
    """Image and label paths of one split of a ``data.root`` dataset (manifest.csv)."""
    import pandas as pd

    root = Path(root or cfg["data"]["root"])
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise InputError(manifest, "dataset manifest not found (data.root)")
    table = pd.read_csv(manifest)
    ids = sorted(table.loc[table["split"] == split, "id"].astype(str))
    limit = cfg["data"]["limit_train" if split == cfg["data"]["train_split"] else "limit_val"]
    if limit:
        ids = ids[: int(limit)]
    if not ids:
        raise ConfigError(f"data.root: no images of split {split!r} in {manifest}")
    return [root / "images" / f"{i}.tif" for i in ids], [root / "labels" / f"{i}.tif" for i in ids]


class PatchSampler:
    """Random augmented patches at the model's object scale, a share centred on foreground.

    Each patch is cut from the image and its instance labels at the sample's ``scale`` times a
    random jitter, flipped/rotated and intensity-augmented (:mod:`grunet.augment`); classes and
    the contact mask are derived from the augmented labels, so they fit the pixels seen.
    """

    def __init__(self, samples: list[Sample], cfg: dict, rng: np.random.Generator):
        self.samples, self.cfg, self.rng = samples, cfg, rng
        self.size = int(cfg["patch_size"])
        # nucleus diameter in patch pixels (size of painted outlier nuclei)
        native = [s.diameter for s in samples if s.diameter]
        d0 = cfg["data"]["object_diameter"] if cfg["data"]["rescale"] else None
        self.diameter = float(d0 or (np.median(native) if native else 16.0))

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (B, 1, P, P) float32, classes (B, P, P) int64, contact (B, P, P) bool)."""
        patches = [self.patch() for _ in range(n)]
        x = torch.from_numpy(np.stack([p[0] for p in patches])[:, None])
        y = torch.from_numpy(np.stack([p[1] for p in patches]).astype(np.int64))
        c = torch.from_numpy(np.stack([p[2] for p in patches]))
        return x, y, c

    def patch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One augmented (image, classes, contact mask) patch."""
        image, labels = self.patch_with_labels()
        d = self.cfg["data"]
        return (
            image,
            targets_from_labels(labels, d["boundary_width"]),
            contact_mask(labels, d["contact_radius"]),
        )

    def patch_with_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """One augmented (image, instance labels) patch; targets come from these labels."""
        rng, size, a = self.rng, self.size, self.cfg["augment"]
        sample = self.samples[rng.integers(len(self.samples))]
        scale = sample.scale * augment.log_uniform(rng, a["scale_jitter"])
        h, w = sample.image.shape
        window = size / scale
        if sample.foreground.size and rng.random() < self.cfg["foreground_bias"]:
            cy, cx = divmod(int(sample.foreground[rng.integers(sample.foreground.size)]), w)
            jitter = int(window // 4)
            cy, cx = cy + rng.integers(-jitter, jitter + 1), cx + rng.integers(-jitter, jitter + 1)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        # keep the window inside the image where the image is large enough
        cy = np.clip(cy, min(window / 2, h / 2), max(h - window / 2, h / 2))
        cx = np.clip(cx, min(window / 2, w / 2), max(w - window / 2, w / 2))
        img, lab = augment.scaled_crop(sample.image, sample.labels, (cy, cx), size, scale)
        img, lab = augment.flip_rotate([img, lab], rng, a["flip"], a["rot90"])
        img, lab = augment.intensity(img, lab, a, self.diameter, rng)
        if a["p_saturate"] and rng.random() < a["p_saturate"]:
            img = augment.overexpose(img, lab, rng.uniform(*a["saturate_share"]))
        if a["p_lowres"] and rng.random() < a["p_lowres"]:
            img = augment.low_resolution(img, augment.log_uniform(rng, a["lowres_factor"]))
        return img, lab


# --------------------------------------------------------------------------------------- loss
def pixel_weights(
    target: torch.Tensor,
    weights: torch.Tensor,
    contact: torch.Tensor | None = None,
    contact_weight: float = 0.0,
) -> torch.Tensor:
    """Per-pixel loss weights: the class weight, ×(1 + contact_weight) where cells touch."""
    w = weights.to(target.device)[target]
    if contact is not None and contact_weight:
        w = w * (1.0 + contact_weight * contact.to(w.dtype))
    return w


def class_weighted_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor):
    """Cross-entropy, weighted mean over pixels; ``weights`` per pixel (:func:`pixel_weights`)."""
    return (weights * F.cross_entropy(logits, target, reduction="none")).sum() / weights.sum()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, gamma: float):
    """Multi-class focal loss (Lin et al. 2017); ``weights`` (alpha) per pixel."""
    logp = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]  # (B, H, W)
    loss = -weights * (1.0 - logp.exp()).pow(gamma) * logp
    return loss.sum() / weights.sum()


def make_loss(cfg: dict):
    """The loss named by ``cfg["loss"]["name"]`` ("wce" or "focal") as ``f(logits, target,
    contact=None)``, with class weights and the contact weight of ``cfg["loss"]``."""
    spec = dict(cfg["loss"])
    spec["name"] = spec["name"] or "wce"
    weights = torch.tensor(spec["class_weights"], dtype=torch.float32)
    if spec["name"] not in ("wce", "focal"):
        raise ConfigError(f"loss.name: unknown loss {spec['name']!r}; choose 'wce' or 'focal'")
    gamma, contact_weight = float(spec["gamma"]), float(spec["contact_weight"])

    def loss(logits: torch.Tensor, target: torch.Tensor, contact=None) -> torch.Tensor:
        w = pixel_weights(target, weights, contact, contact_weight)
        if spec["name"] == "wce":
            return class_weighted_ce(logits, target, w)
        return focal_loss(logits, target, w, gamma)

    return loss


# -------------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict_probabilities(
    model: GRUUNet, image: np.ndarray, device: torch.device, amp: bool = True
) -> np.ndarray:
    """Softmax class probabilities (3, Y, X) float32 of one whole normalised 2D image."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        logits = model(x)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def segment_samples(probs: list[np.ndarray], samples: list[Sample], thresholds: dict) -> list[dict]:
    """Counts (see :func:`grunet.evaluate.image_counts`) of each sample's segmentation."""
    return [
        image_counts(s.labels, instances_from_probabilities(p, **thresholds))
        for p, s in zip(probs, samples)
    ]


def tune_thresholds(
    probs: list[np.ndarray],
    samples: list[Sample],
    seeds: Sequence[float] = (0.5, 0.6, 0.7, 0.8),
    foregrounds: Sequence[float] = (0.4, 0.5),
) -> tuple[dict, float]:
    """Grid search of the segmentation thresholds by pooled F1@IoU0.5 (use training images)."""
    best, best_f1 = {"seed_threshold": 0.5, "foreground_threshold": 0.5}, -1.0
    for st in seeds:
        for ft in foregrounds:
            th = {"seed_threshold": float(st), "foreground_threshold": float(ft)}
            f1 = summarize(segment_samples(probs, samples, th))["f1_50"]
            if f1 > best_f1 + 1e-9:
                best, best_f1 = th, f1
    return best, best_f1


# ------------------------------------------------------------------------------------ trainer
class Trainer(EpochLoop):
    """The instance training loop (:class:`grunet.train_loop.EpochLoop`): patches with
    interior / boundary targets, validation by instance F1@0.5 on the val images."""

    score_key = "f1_50"

    def __init__(self, cfg: dict, train: list[Sample], val: list[Sample], out_dir: Path, device):
        self.train_samples, self.val_samples = train, val
        self._setup(cfg, out_dir, device)
        self.ema = None
        if cfg["ema_decay"]:
            if not 0.0 < cfg["ema_decay"] < 1.0:
                raise ConfigError(f"ema_decay must be in (0, 1), got {cfg['ema_decay']}")
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg["ema_decay"]), use_buffers=True
            )
        self.loss_fn = make_loss(cfg)
        self.sampler = PatchSampler(train, cfg, self.rng)
        self.thresholds = dict(cfg["segmentation"])

    # ---- steps
    def train_step(self) -> float:
        self.model.train()
        x, y, contact = self.sampler.batch(self.cfg["batch_size"])
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        y, contact = y.to(self.device), contact.to(self.device)
        with autocast(self.device, self.cfg["amp"]):
            logits = self.model(x)
        value = self.optimise(self.loss_fn(logits.float(), y, contact))
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return value

    @property
    def evaluated(self) -> torch.nn.Module:
        """The network validated and saved: the weights' moving average if enabled."""
        return self.model if self.ema is None else self.ema.module

    def validate_epoch(self) -> tuple[dict, float, dict]:
        """Instance metrics and loss of the val images, and the log's val columns."""
        probs, losses = [], []
        for s in self.val_samples:
            p = predict_probabilities(self.evaluated, s.image, self.device, self.cfg["amp"])
            probs.append(p)
            logp = torch.from_numpy(np.log(np.clip(p, 1e-7, 1.0)))[None]
            target = torch.from_numpy(s.targets.astype(np.int64))[None]
            contact = None if s.contact is None else torch.from_numpy(s.contact)[None]
            losses.append(float(self.loss_fn(logp, target, contact)))
        metrics = summarize(segment_samples(probs, self.val_samples, self.thresholds))
        columns = {
            "val_f1_50": metrics["f1_50"],
            "val_ap50": metrics["ap50"],
            "val_f1_75": metrics["thresholds"][0.75]["f1"],
            "val_seg": metrics["seg"],
        }
        return metrics, float(np.mean(losses)), columns

    def finish(self) -> None:
        """Thresholds tuned on train images (``tune_thresholds``) and the val metrics file."""
        if (self.out_dir / "val_metrics.json").exists():
            return
        if self.cfg["tune_thresholds"]:
            self.finish_with_tuning()
        else:
            self.write_val_metrics(self.best.get("metrics", {}), self.thresholds)

    # ---- outputs
    def metadata(self) -> dict:
        return {
            "grunet_train": True,
            "preset": self.cfg["model"].get("preset", "small"),
            "epoch": self.epoch,
            "epochs": self.cfg["epochs"],
            "steps": self.epoch * self.cfg["steps_per_epoch"],
            "loss": self.cfg["loss"]["name"],
            "data": self.cfg["data"].get("root"),
            "n_train_images": len(self.train_samples),
            "n_val_images": len(self.val_samples),
            "normalization": {"percentiles": list(self.cfg["data"]["percentiles"])},
            "object_diameter": self.object_diameter(),
            "scale_jitter": list(self.cfg["augment"]["scale_jitter"]),
            "segmentation": dict(self.thresholds),
            "config": self.cfg,
        }

    def object_diameter(self) -> float | None:
        """D0: the diameter the images were rescaled to, else the training images' median."""
        if self.cfg["data"]["rescale"]:
            return float(self.cfg["data"]["object_diameter"])
        diameters = [s.diameter for s in self.train_samples if s.diameter]
        return float(np.median(diameters)) if diameters else None

    def save(self, improved: bool) -> None:
        meta = self.metadata()
        last = self.history[-1]
        meta["val"] = {k: v for k, v in last.items() if k.startswith("val_")}
        if improved:
            save_checkpoint(self.out_dir / "best.pt", self.evaluated, jsonable(meta))
        meta["resume"] = {
            **self.resume_state(),
            "best": jsonable({k: v for k, v in self.best.items() if k != "metrics"}),
            "best_metrics": json.dumps(jsonable(self.best.get("metrics", {}))),
        }
        if self.ema is not None:  # last.pt holds the average; training resumes from the raw
            meta["resume"]["raw_weights"] = {
                k: v.detach().cpu() for k, v in self.model.state_dict().items()
            }
            meta["resume"]["ema_updates"] = int(self.ema.n_averaged)
        save_checkpoint(self.out_dir / "last.pt", self.evaluated, meta)
        self.write_log()
        plot_curves(self.history, self.out_dir / "curves.png")

    def resume(self) -> None:
        ckpt = load_checkpoint(self.out_dir / "last.pt")
        state = self.restore(ckpt.metadata)
        self.model.load_state_dict(state.get("raw_weights", ckpt.state_dict))
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt.state_dict)
            self.ema.n_averaged.fill_(int(state.get("ema_updates", 1)))
        self.best = dict(state["best"])
        self.best["metrics"] = _float_keys(json.loads(state["best_metrics"]))

    def write_val_metrics(self, metrics: dict, thresholds: dict, extra: dict | None = None) -> None:
        out = {
            "best_epoch": self.best.get("epoch"),
            "segmentation": thresholds,
            "val": metrics,
            **(extra or {}),
        }
        self.write_val_metrics_file(out)

    def finish_with_tuning(self) -> None:
        """Tune thresholds on the train split with best.pt, re-score val, update best.pt."""
        ckpt = load_checkpoint(self.out_dir / "best.pt")
        model = ckpt.build_model().to(self.device).to(memory_format=torch.channels_last)
        tune_set = self.train_samples
        n = self.cfg["tune_images"]
        if n and n < len(tune_set):
            pick = np.random.default_rng(self.cfg["seed"]).choice(len(tune_set), n, replace=False)
            tune_set = [tune_set[i] for i in sorted(pick)]
        if self.cfg["data"]["rescale"]:  # tune where the model works: at its object diameter
            d = self.cfg["data"]
            opts = {"boundary_width": d["boundary_width"], "contact_radius": d["contact_radius"]}
            tune_set = [rescaled(s, float(d["object_diameter"]), opts) for s in tune_set]
        probs = [
            predict_probabilities(model, s.image, self.device, self.cfg["amp"])
            for s in tqdm(tune_set, desc="tune thresholds", file=sys.stderr)
        ]
        tuned, train_f1 = tune_thresholds(probs, tune_set)
        default_train = summarize(segment_samples(probs, tune_set, self.thresholds))
        val_probs = [
            predict_probabilities(model, s.image, self.device, self.cfg["amp"])
            for s in self.val_samples
        ]
        val_tuned = summarize(segment_samples(val_probs, self.val_samples, tuned))
        meta = dict(ckpt.metadata)
        meta["segmentation"] = tuned
        meta["val_default_thresholds"] = jsonable(self.best.get("metrics", {}))
        meta["val_metrics"] = jsonable(val_tuned)
        meta["train_f1_50"] = {
            "default_thresholds": default_train["f1_50"],
            "tuned": train_f1,
            "n_images": len(tune_set),
        }
        save_checkpoint(self.out_dir / "best.pt", model, meta)
        self.write_val_metrics(
            val_tuned,
            tuned,
            {
                "val_default_thresholds": self.best.get("metrics", {}),
                "default_thresholds": self.thresholds,
                "train_f1_50": meta["train_f1_50"],
            },
        )


def _float_keys(d):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            try:
                key = float(k) if "." in k else k
            except (TypeError, ValueError):
                key = k
            out[key] = _float_keys(v)
        return out
    return d


INSTANCE_CURVES = {"F1@0.5": "val_f1_50", "F1@0.75": "val_f1_75", "SEG": "val_seg"}


def plot_curves(
    history: list[dict], path: Path, validation: dict[str, str] = INSTANCE_CURVES
) -> None:
    """Loss, the ``validation`` scores (legend label -> log key) and the learning rate per
    epoch as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], label="val")
    axes[0].set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    for label, key in validation.items():
        axes[1].plot(epochs, [r[key] for r in history], label=label)
    axes[1].set(xlabel="epoch", title="validation", ylim=(0, 1))
    axes[2].plot(epochs, [r["lr"] for r in history])
    axes[2].set(xlabel="epoch", title="learning rate (end of epoch)")
    for ax in axes[:2]:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def train(
    config: str | Path | dict | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    images: Sequence[str | Path] | None = None,
    labels: Sequence[str | Path] | None = None,
    device: str = "auto",
    stop_after: int | None = None,
) -> dict:
    """Train a GRUU-Net from a config (YAML path or dict); write checkpoints, log and curves.

    Args:
        config: YAML path or dict of training options (see :data:`DEFAULTS`).
        out_dir: output folder (best.pt, last.pt, log.csv, curves.png, val_metrics.json).
        resume: continue from ``out_dir/last.pt`` exactly where it stopped.
        images, labels: explicit training pairs (TIFF or OME-Zarr) instead of ``data.root``;
            ``data.val_fraction`` of them (at least one) is held out for validation.
        device: "auto", "cpu", "cuda" or "mps".
        stop_after: stop after this many epochs of this call (to test resuming).

    Returns:
        The best epoch and its validation metrics.

    Example:
        >>> train("config/train_demo.yaml", "runs/demo")  # doctest: +SKIP
    """
    cfg = config if isinstance(config, dict) else load_config(config)
    cfg = _merge(DEFAULTS, cfg, "")
    if cfg["task"] not in TASKS:
        raise ConfigError(f"task: {cfg['task']!r}; choose one of {TASKS}")
    if cfg["loss"]["name"] is None:
        cfg["loss"]["name"] = "ce" if cfg["task"] == SEMANTIC else "wce"
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    out_dir = Path(out_dir)
    if not resume and (out_dir / "last.pt").exists():
        raise ConfigError(f"{out_dir}: holds a previous run (last.pt); use --resume or a new -o")
    if resume and not (out_dir / "last.pt").exists():
        raise ConfigError(f"{out_dir}: nothing to resume (no last.pt)")
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg["task"] == SEMANTIC:
        from grunet.semantic_train import train_semantic

        return train_semantic(
            cfg,
            out_dir,
            resume=resume,
            device=device,
            stop_after=stop_after,
            images=images,
            labels=labels,
        )
    dev = select_device(device)
    d = cfg["data"]
    opts = {
        "percentiles": d["percentiles"],
        "boundary_width": d["boundary_width"],
        "contact_radius": d["contact_radius"],
    }
    if images:
        if not labels:
            raise ConfigError("--labels: required with --images")
        samples = make_samples(images, labels, **opts)
        if len(samples) < 2:
            raise ConfigError("--images: need at least two image planes (train + val)")
        train_set, val = hold_out(samples, float(d["val_fraction"]), cfg["seed"])
        cfg["data"]["root"] = None
        cfg["data"]["files"] = {
            "images": [str(p) for p in images],
            "labels": [str(p) for p in labels],
        }
    else:
        if not d["root"]:
            raise ConfigError("data.root: set a dataset folder or pass --images/--labels")
        train_set = make_samples(*dataset_paths(cfg, d["train_split"]), **opts)
        for root in d["extra_train_roots"]:
            train_set += make_samples(*dataset_paths(cfg, d["train_split"], root), **opts)
        val = make_samples(*dataset_paths(cfg, d["val_split"]), crop=d["crop_val"], **opts)
    if d["rescale"]:
        diameter = object_diameter(cfg, train_set)
        cfg["data"]["object_diameter"] = diameter
        train_set = [_with_scale(s, diameter) for s in train_set]
        val = [rescaled(s, diameter, opts) for s in val]
    if d["val_glow"]:
        val += with_glow(val, cfg["augment"]["glow_level"], cfg["seed"])
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    trainer = Trainer(cfg, train_set, val, out_dir, dev)
    if resume:
        trainer.resume()
    tqdm.write(
        f"training on {dev} (autocast {autocast_dtype(dev) if cfg['amp'] else None}), "
        f"{len(train_set)} train / {len(val)} val images, epoch {trainer.epoch}/{cfg['epochs']}",
        file=sys.stderr,
    )
    return trainer.fit(stop_after=stop_after)


def object_diameter(cfg: dict, samples: list[Sample]) -> float:
    """The run's canonical nucleus diameter D0 (px): ``data.object_diameter``, else the init
    checkpoint's, else the median of the training images' median diameters."""
    given = cfg["data"]["object_diameter"]
    if given is not None:
        if not isinstance(given, (int, float)) or isinstance(given, bool) or not given > 0:
            raise ConfigError(f"data.object_diameter must be a positive number, got {given!r}")
        return float(given)
    if cfg["init"]:
        stored = load_checkpoint(cfg["init"]).metadata.get("object_diameter")
        if stored:
            return float(stored)
    diameters = [s.diameter for s in samples if s.diameter]
    if not diameters:
        raise ConfigError("data.object_diameter: training labels hold no cells to measure")
    return float(np.median(diameters))


def _with_scale(sample: Sample, diameter: float) -> Sample:
    sample.scale = diameter / sample.diameter if sample.diameter else 1.0
    return sample


def rescaled(sample: Sample, diameter: float, opts: dict) -> Sample:
    """A sample resized so that its median nucleus diameter is ``diameter`` (targets rebuilt)."""
    if not sample.diameter or abs(diameter / sample.diameter - 1.0) < 1e-6:
        return sample
    image, labels = rescale_pair(sample.image, sample.labels, diameter / sample.diameter)
    return Sample(
        name=sample.name,
        image=image,
        targets=targets_from_labels(labels, opts["boundary_width"]),
        labels=labels,
        foreground=np.flatnonzero(labels),
        contact=contact_mask(labels, opts["contact_radius"]),
        diameter=median_diameter(labels),
        scale=1.0,
    )


def with_glow(samples: list[Sample], level: Sequence[float], seed: int) -> list[Sample]:
    """Copies of the samples with cytoplasm glow around their nuclei (same labels): a val set
    on which counting glow as dim nuclei costs F1. Seeded, so every epoch sees the same."""
    rng = np.random.default_rng(seed)
    return [
        Sample(
            name=s.name + "+glow",
            image=augment.add_cytoplasm_glow(s.image, s.labels, s.diameter, tuple(level), rng),
            targets=s.targets,
            labels=s.labels,
            foreground=s.foreground,
            contact=s.contact,
            diameter=s.diameter,
            scale=s.scale,
        )
        for s in samples
        if s.diameter
    ]


def export_model(
    run_dir: str | Path,
    dest: str | Path,
    *,
    command: str,
    notes: dict | None = None,
    scale_model: str | Path | None = None,
    low_magnification_run: str | Path | None = None,
    min_factor: float | None = None,
) -> dict:
    """Ship a run's ``best.pt`` as a small checkpoint plus a JSON sidecar of its figures.

    The checkpoint's metadata keeps what inference needs (preset, normalisation percentiles,
    segmentation thresholds) and what provenance needs (data, split, epochs, val metrics, the
    command that reproduces it); the sidecar ``dest.json`` repeats it with the file's sha256.
    ``scale_model``: a checkpoint whose scale estimator (its own scale model, else its network)
    is stored inside ``dest`` and estimates the object scale for it
    (:func:`grunet.scale.estimate_diameter`).
    ``low_magnification_run``: a run (its ``best.pt``) whose network predicts, instead of this
    one, the images upscaled by ``min_factor`` (default :data:`grunet.scale.LOW_MAGNIFICATION`)
    or more; stored inside ``dest`` (:meth:`grunet.predict.Predictor.for_factor`).

    Returns:
        The sidecar's content.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    ckpt, log, provenance = run_provenance(run_dir)
    meta, cfg = ckpt.metadata, ckpt.metadata["config"]
    val_file = run_dir / "val_metrics.json"
    val = json.loads(val_file.read_text()) if val_file.exists() else {}
    shipped = {
        **provenance,
        "loss": cfg["loss"],
        "normalization": meta["normalization"],
        "object_diameter": meta.get("object_diameter"),
        "scale_jitter": meta.get("scale_jitter"),
        "segmentation": meta["segmentation"],
        "val_metrics": val.get("val", meta.get("val_metrics")),
        "val_metrics_default_thresholds": val.get("val_default_thresholds"),
        "train_f1_50": val.get("train_f1_50"),
        "last_epoch": {k: float(v) for k, v in log[-1].items()},
        "command": command,
        "config": cfg,
        **(notes or {}),
    }
    scale = None
    if scale_model is not None:
        scale, shipped["scale_model"] = _scale_network(scale_model, meta["normalization"])
    low = None
    if low_magnification_run is not None:
        low, shipped["low_magnification_model"] = _low_magnification(
            low_magnification_run, meta, min_factor
        )
        min_factor = shipped["low_magnification_model"]["min_factor"]
    shipped = jsonable(shipped)
    sha = save_checkpoint(
        dest,
        ckpt.build_model(),
        shipped,
        scale_model=scale,
        low_magnification_model=low,
        min_factor=min_factor,
    )
    return write_sidecar(dest, sha, shipped)


def _scale_network(path: str | Path, normalization) -> tuple[Checkpoint, dict]:
    """The network a checkpoint estimates the object scale with (its own scale model, else
    its network) and its provenance; refused where it sees other intensities than a model
    normalised by ``normalization`` hands it."""
    source = load_checkpoint(path)
    scale = source.scale_model or source
    theirs = scale.metadata.get("normalization") or source.metadata.get("normalization")
    if theirs and theirs != normalization:
        raise ConfigError(
            f"{path}: its normalisation {theirs} differs from the model's {normalization}; "
            "it cannot estimate the scale for this model"
        )
    info = {
        "source": str(path),
        "sha256": scale.sha256,
        "object_diameter": scale.metadata.get("object_diameter"),
    }
    return scale, info


def attach_scale_model(
    model: str | Path, scale_model: str | Path, dest: str | Path, *, command: str
) -> dict:
    """A shipped checkpoint whose object scale is estimated by another network.

    ``scale_model``: a checkpoint (e.g. a run's ``best.pt`` or ``last.pt``) whose scale model,
    else its network, runs the estimate's passes (:func:`grunet.scale.estimate_diameter`).
    Everything else of ``model`` (weights, metadata, low-magnification network) is kept;
    ``dest`` gets the new file and its JSON sidecar, which records the change and ``command``.
    """
    base = load_checkpoint(model)
    scale, info = _scale_network(scale_model, base.metadata.get("normalization"))
    return _resave(base, dest, "scale_model", {**info, "command": command}, scale=scale)


def average_networks(
    model: str | Path,
    other: str | Path,
    weight: float,
    dest: str | Path,
    *,
    command: str,
    notes: dict | None = None,
) -> dict:
    """A shipped checkpoint whose network is the weight average of ``model``'s and ``other``'s.

    Two fine-tunes of one network (one a fine-tune of the other, say) average into one that
    keeps much of what each learned ("model soup"): ``(1 - weight) × model + weight × other``,
    parameter by parameter (batch-norm statistics too; counters from ``other``). Everything
    else of ``model`` (metadata, scale model, low-magnification network) is kept; ``dest`` gets
    the new file and its JSON sidecar, which records ``other``, ``weight``, ``command`` and
    ``notes`` (e.g. the average's measured figures: the training figures kept in the metadata
    are ``model``'s).
    Refused, nothing written, where the two differ in architecture, normalisation or object
    diameter (their weights would not mean the same).
    """
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"weight: must be within [0, 1], got {weight}")
    base, second = load_checkpoint(model), load_checkpoint(other)
    _check_same_inputs(other, second.metadata, base.metadata, "the networks cannot be averaged")
    if second.config != base.config:
        raise ConfigError(f"{other}: another architecture than {model}'s; cannot be averaged")
    averaged = {
        name: torch.lerp(value.float(), second.state_dict[name].float(), weight).to(value.dtype)
        if value.is_floating_point()
        else second.state_dict[name]
        for name, value in base.state_dict.items()
    }
    network = base.build_model()
    network.load_state_dict(averaged)
    info = {"source": str(other), "sha256": second.sha256, "weight": weight, "command": command}
    info.update(notes or {})
    return _resave(base, dest, "averaged_with", info, network=network)


def _resave(
    base: Checkpoint,
    dest,
    key: str,
    info: dict,
    *,
    network=None,
    scale: Checkpoint | None = None,
    low: Checkpoint | None = None,
    min_factor: float | None = None,
) -> dict:
    """``base`` saved to ``dest`` with one part replaced — its network (``network``), scale
    model (``scale``) or low-magnification network (``low`` from ``min_factor``) — the rest
    kept, the provenance of the part replaced (``key``: ``info``) in its metadata, and the
    sidecar."""
    if low is None and base.low_magnification_model is not None:
        low = base.low_magnification_model
        min_factor = low.metadata["min_factor"]
    meta = jsonable({**base.metadata, key: info})
    sha = save_checkpoint(
        dest,
        base.build_model() if network is None else network,
        meta,
        scale_model=base.scale_model if scale is None else scale,
        low_magnification_model=low,
        min_factor=min_factor,
    )
    return write_sidecar(Path(dest), sha, meta)


def _check_same_inputs(source, theirs: dict, ours: dict, consequence: str) -> None:
    """Refuse a network that sees other intensities or another object scale than the model
    it joins (their weights would not mean the same), naming ``source``."""
    for key in ("normalization", "object_diameter"):
        if theirs.get(key) != ours.get(key):
            raise ConfigError(
                f"{source}: its {key} {theirs.get(key)} differs from the model's "
                f"{ours.get(key)}; {consequence}"
            )


def _low_magnification(run_dir, meta: dict, min_factor: float | None):
    """A run's ``best.pt`` as the low-magnification network of a model with ``meta``, and
    its provenance; refused where it sees other intensities or another object scale."""
    from grunet.scale import LOW_MAGNIFICATION

    low = load_checkpoint(Path(run_dir) / "best.pt")
    _check_same_inputs(run_dir, low.metadata, meta, "it cannot stand in for that model")
    val = low.metadata.get("val_metrics") or {}
    info = {  # its full config and metrics stay with the run (best.pt, config.json)
        "source": str(run_dir),
        "sha256": low.sha256,
        "min_factor": float(min_factor or LOW_MAGNIFICATION),
        "best_epoch": low.metadata.get("epoch"),
        "val_f1_50": val.get("f1_50"),
        "val_seg": val.get("seg"),
    }
    return low, info


def attach_low_magnification(
    model: str | Path,
    run_dir: str | Path,
    dest: str | Path,
    *,
    command: str,
    min_factor: float | None = None,
) -> dict:
    """A shipped checkpoint with a run's network added as its low-magnification network.

    Everything else of ``model`` (weights, metadata, scale model) is kept; ``dest`` gets the
    new file and its JSON sidecar, which records the addition and ``command``.
    """
    base = load_checkpoint(model)
    low, info = _low_magnification(run_dir, base.metadata, min_factor)
    info = {**info, "command": command}
    return _resave(
        base, dest, "low_magnification_model", info, low=low, min_factor=info["min_factor"]
    )
