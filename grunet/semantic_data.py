"""Data of semantic tasks: class lists, RGB image / class-index label pairs, statistics, patches.

A dataset folder holds ``images/<id>.png`` (RGB or grey), ``labels/<id>.png`` (one class index per
pixel, the ignore index for unlabelled pixels), ``manifest.csv`` (columns ``id``, ``split``) and
optionally ``classes.csv`` (``index,name,colour``). TIFF files (``.tif``) work as well.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from grunet.errors import ConfigError, InputError

SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
CLASS_WEIGHTINGS = ("none", "inverse", "median_frequency", "median_frequency_sqrt")


# ------------------------------------------------------------------------------------ classes
def read_classes_csv(path: str | Path, ignore_index: int = 255) -> list[dict]:
    """Classes of a ``classes.csv`` (``index,name[,colour]``), in index order, ignore row left out.

    Indices must run 0..N-1 (apart from the ignore index).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "classes file not found")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "name" not in rows[0]:
        raise InputError(path, "expected columns index,name[,colour]")
    classes: dict[int, dict] = {}
    for i, row in enumerate(rows):
        try:
            index = int(row.get("index", i))
        except ValueError:
            problem = f"row {i + 2}: index {row.get('index')!r} is not a number"
            raise InputError(path, problem) from None
        if index == ignore_index:
            continue
        classes[index] = {"name": row["name"].strip(), "colour": (row.get("colour") or None)}
    if sorted(classes) != list(range(len(classes))):
        raise InputError(path, f"class indices must be 0..N-1, got {sorted(classes)}")
    return [classes[i] for i in range(len(classes))]


def resolve_classes(spec, root: str | Path | None, ignore_index: int) -> list[dict]:
    """The class list from the config key ``classes``: a list of names or {name, colour}
    mappings, a path of a classes.csv, or None (``<data.root>/classes.csv``)."""
    if spec is None:
        if root is None:
            raise ConfigError("classes: give the class names (or a classes.csv) for task semantic")
        return read_classes_csv(Path(root) / "classes.csv", ignore_index)
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_absolute() and root is not None and not path.exists():
            path = Path(root) / spec
        return read_classes_csv(path, ignore_index)
    if not isinstance(spec, list) or not spec:
        raise ConfigError("classes: expected a list of class names or a classes.csv path")
    out = []
    for i, entry in enumerate(spec):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"classes[{i}]: expected a name or a mapping with 'name'")
        out.append({"name": str(entry["name"]), "colour": entry.get("colour")})
    return out


# ------------------------------------------------------------------------------------- images
@dataclass
class SemanticSample:
    """One annotated image: ``image`` (Y, X, C) uint8 at the working scale, ``labels`` (Y, X)
    uint8 class indices at the working scale, ``full_labels`` at the file's resolution."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    full_labels: np.ndarray


def find_file(folder: Path, stem: str) -> Path:
    """``folder/<stem>.<png|tif|...>``; InputError naming the expected path if none exists."""
    for suffix in SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise InputError(folder / f"{stem}.png", "no such file (expected .png or .tif)")


def read_rgb(path: Path, channels: int) -> np.ndarray:
    """An image file as (Y, X, C) uint8 with ``channels`` channels (grey → C copies)."""
    arr = _read_array(path)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], channels, axis=-1)
    if arr.ndim != 3:
        raise InputError(path, f"expected a 2D grey or RGB image, got shape {arr.shape}")
    if arr.shape[-1] == 4 and channels == 3:
        arr = arr[..., :3]
    if arr.shape[-1] != channels:
        raise InputError(path, f"image has {arr.shape[-1]} channels, the model expects {channels}")
    if arr.dtype != np.uint8:
        raise InputError(path, f"expected an 8-bit image, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def read_class_labels(path: Path, n_classes: int, ignore_index: int) -> np.ndarray:
    """A class-index label file as (Y, X) uint8; values ≥ N (other than ignore) are errors."""
    arr = _read_array(path)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and np.all(arr[..., :1] == arr[..., :3]):
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputError(path, f"expected a 2D class-index label image, got shape {arr.shape}")
    check_class_labels(arr, n_classes, ignore_index, path)
    return arr.astype(np.uint8 if ignore_index < 256 else np.uint16)


def check_class_labels(labels: np.ndarray, n_classes: int, ignore_index: int, path) -> None:
    """InputError naming the file and the value if a label is neither a class nor ignored."""
    values = np.unique(labels)
    bad = values[((values < 0) | (values >= n_classes)) & (values != ignore_index)]
    if bad.size:
        raise InputError(
            path,
            f"label value {int(bad[0])} is not a class index 0..{n_classes - 1} nor the ignore "
            f"index {ignore_index} ({bad.size} such value(s): {bad[:5].tolist()})",
        )


def _read_array(path: Path) -> np.ndarray:
    if path.name.lower().endswith(".zarr"):  # a grunet OME-Zarr store: (Y, X) or (Y, X, C)
        from grunet.io import open_store

        stack = open_store(path)
        if stack.shape[0] != 1 or stack.shape[2] != 1:
            raise InputError(
                path, f"expected one 2D plane, got {stack.shape[0]} t, {stack.shape[2]} z"
            )
        plane = np.asarray(stack.data[0, :, 0])
        return plane[0] if plane.shape[0] == 1 else np.moveaxis(plane, 0, -1)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im)
    except OSError as err:
        raise InputError(path, f"not a readable image ({err})") from None


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """(Y, X, C) uint8 resized by ``scale`` (area-averaged down, bilinear up)."""
    if scale == 1.0:
        return image
    t = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    size = [max(1, round(s * scale)) for s in image.shape[:2]]
    if scale < 1:
        out = F.interpolate(t, size=size, mode="area")
    else:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Class labels resized to ``shape`` by nearest neighbour (pixel centres)."""
    if tuple(labels.shape) == tuple(shape):
        return labels
    t = torch.from_numpy(labels.astype(np.int32))[None, None].float()
    out = F.interpolate(t, size=tuple(shape), mode="nearest-exact")[0, 0]
    return out.numpy().astype(labels.dtype)


def split_ids(root: Path, split: str, limit: int | None = None) -> list[str]:
    """Image ids of one split of ``root/manifest.csv`` (sorted)."""
    import pandas as pd

    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise InputError(manifest, "dataset manifest not found (data.root)")
    table = pd.read_csv(manifest, dtype={"id": str})
    if "id" not in table or "split" not in table:
        raise InputError(manifest, "expected columns id and split")
    ids = sorted(table.loc[table["split"] == split, "id"].astype(str))
    if limit:
        ids = ids[: int(limit)]
    if not ids:
        raise ConfigError(f"data.root: no images of split {split!r} in {manifest}")
    return ids


def load_split(
    root: str | Path,
    split: str,
    *,
    n_classes: int,
    ignore_index: int,
    channels: int = 3,
    input_scale: float = 1.0,
    limit: int | None = None,
) -> list[SemanticSample]:
    """All image/label pairs of a split in memory, resized to the working scale."""
    root = Path(root)
    pairs = [
        (stem, find_file(root / "images", stem), find_file(root / "labels", stem))
        for stem in split_ids(root, split, limit)
    ]
    opts = {"n_classes": n_classes, "ignore_index": ignore_index, "channels": channels}
    return load_pairs(pairs, **opts, input_scale=input_scale)


def load_pairs(
    pairs: list[tuple[str, Path, Path]],
    *,
    n_classes: int,
    ignore_index: int,
    channels: int = 3,
    input_scale: float = 1.0,
) -> list[SemanticSample]:
    """(name, image, class labels) file pairs in memory, resized to the working scale.

    Images: 8-bit PNG / JPEG / TIFF or a grunet OME-Zarr store (the workflow's converted
    samples); labels: class indices 0..N-1 or the ignore index.
    """
    samples = []
    for name, ip, lp in pairs:
        ip, lp = Path(ip), Path(lp)
        image = read_rgb(ip, channels)
        labels = read_class_labels(lp, n_classes, ignore_index)
        if image.shape[:2] != labels.shape:
            raise InputError(lp, f"labels {labels.shape} differ from image {image.shape[:2]}")
        small = resize_image(image, input_scale)
        samples.append(SemanticSample(name, small, resize_labels(labels, small.shape[:2]), labels))
    return samples


# --------------------------------------------------------------------------------- statistics
def channel_stats(samples: list[SemanticSample]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the images on the 0..1 scale (pixels pooled)."""
    channels = samples[0].image.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    n = 0
    for s in samples:
        x = s.image.reshape(-1, channels).astype(np.float64) / 255.0
        total += x.sum(axis=0)
        total_sq += (x * x).sum(axis=0)
        n += x.shape[0]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 1e-12))
    return mean.tolist(), std.tolist()


def class_pixel_counts(
    samples: list[SemanticSample], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(pixels per class, labelled pixels of the images in which each class occurs)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    present_total = np.zeros(n_classes, dtype=np.int64)
    for s in samples:
        c = np.bincount(s.labels.ravel(), minlength=256)[:n_classes]
        counts += c
        present_total += np.where(c > 0, c.sum(), 0)
    return counts, present_total


def class_weights(samples: list[SemanticSample], n_classes: int, method: str) -> list[float]:
    """Per-class loss weights: ``none`` (all 1), ``inverse`` (1 / frequency, mean 1 over
    classes), ``median_frequency`` (SegNet: median(freq) / freq(c), with freq(c) the class's
    pixels over the labelled pixels of the images where it occurs) or
    ``median_frequency_sqrt`` (its square root: rare classes count more without the large
    weights that cost global accuracy). Absent classes get 0."""
    if method not in CLASS_WEIGHTINGS:
        raise ConfigError(f"class_weighting: {method!r}; choose one of {CLASS_WEIGHTINGS}")
    if method == "none":
        return [1.0] * n_classes
    counts, present_total = class_pixel_counts(samples, n_classes)
    present = counts > 0
    if method == "inverse":
        freq = counts / max(1, counts.sum())
        w = np.where(present, 1.0 / np.where(present, freq, 1), 0.0)
        w = w / w[present].mean()
    else:
        freq = np.where(present, counts / np.maximum(present_total, 1), 0.0)
        median = np.median(freq[present])
        w = np.where(present, median / np.where(present, freq, 1), 0.0)
        if method == "median_frequency_sqrt":
            w = np.sqrt(w)
    return [float(v) for v in w]


# ------------------------------------------------------------------------------------ patches
class SemanticPatchSampler:
    """Random patches for natural images: random rescale (log-uniform in ``scale_jitter``) +
    crop, horizontal flip, colour jitter (brightness, contrast, saturation), then mean/std
    normalisation. Where a crop runs past the image, labels are the ignore index."""

    def __init__(
        self,
        samples: list[SemanticSample],
        cfg: dict,
        mean: list[float],
        std: list[float],
        rng: np.random.Generator,
    ):
        self.samples, self.rng = samples, rng
        self.size = int(cfg["patch_size"])
        aug = cfg["augment"]
        self.flip = bool(aug["flip"])
        self.scale_range = [float(v) for v in aug["scale_jitter"]]
        self.colour = dict(aug["colour_jitter"])
        self.ignore = int(cfg["ignore_index"])
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, C, P, P) float32 normalised, labels (B, P, P) int64)."""
        pairs = [self.patch() for _ in range(n)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def patch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rng, size = self.rng, self.size
        s = self.samples[rng.integers(len(self.samples))]
        lo, hi = self.scale_range
        scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        src = max(1, round(size / scale))  # crop side in source pixels
        h, w = s.labels.shape
        y0 = int(rng.integers(min(0, h - src), max(0, h - src) + 1))
        x0 = int(rng.integers(min(0, w - src), max(0, w - src) + 1))
        img = torch.zeros((src, src, s.image.shape[-1]), dtype=torch.uint8)
        lab = torch.full((src, src), self.ignore, dtype=torch.int64)
        ys, xs = slice(max(0, y0), min(h, y0 + src)), slice(max(0, x0), min(w, x0 + src))
        ty = slice(ys.start - y0, ys.stop - y0)
        tx = slice(xs.start - x0, xs.stop - x0)
        img[ty, tx] = torch.from_numpy(s.image[ys, xs])
        lab[ty, tx] = torch.from_numpy(s.labels[ys, xs].astype(np.int64))
        x = img.permute(2, 0, 1).float()[None] / 255.0
        valid = torch.zeros((1, 1, src, src))
        valid[..., ty, tx] = 1.0
        if src != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            lab = F.interpolate(lab[None, None].float(), size=(size, size), mode="nearest-exact")
            lab = lab[0, 0].long()
        x = x[0]
        if self.flip and rng.random() < 0.5:
            x, lab = x.flip(-1), lab.flip(-1)
        x = self.jitter(x)
        x = (x - self.mean) / self.std
        return x, lab

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Random brightness, contrast and saturation factors in 1 ± the configured strength."""
        rng, c = self.rng, self.colour

        def factor(key: str) -> float:
            s = float(c.get(key, 0.0))
            return float(rng.uniform(1 - s, 1 + s)) if s > 0 else 1.0

        x = x * factor("brightness")
        mean = x.mean()
        x = (x - mean) * factor("contrast") + mean
        if x.shape[0] == 3:
            grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
            x = (x - grey) * factor("saturation") + grey
        return x.clamp(0.0, 1.0)
