"""Segmentation quality on the dsb2018_fluo val split: a checkpoint vs. Otsu + watershed.

Whole val images, normalised with the checkpoint's percentiles (or ``--percentiles``), segmented
with the thresholds stored in the checkpoint (metadata "segmentation"); metrics pooled over images
(see grunet.evaluate). Prints AP50, F1 at IoU 0.5...0.9, precision/recall, matched IoU and SEG at
two object scales:

- ``native``: the images as they are;
- ``label``: each image resized so that the median equivalent diameter of its *true* nuclei is
  the model's object diameter D0 (checkpoint metadata ``object_diameter``, else ``--diameter``),
  predicted there, the probabilities resized back to the original grid (linear) and segmented
  there, scored against the original truth: the model's quality at its own scale.

``--outliers N`` paints N saturated nuclei (flat, 10x the image's upper percentile) onto the
background of every image first and scores only the ordinary nuclei (predictions on a painted
nucleus are dropped): the normalisation-outlier robustness of Issue 13. ``--overexpose P`` clips
the brightest P % of every image's nucleus pixels (from its labels) to one value first, as an
overexposed camera does.

    python benchmarks/quality_dsb2018.py [--model CKPT] [--scale both] [--outliers 3]
        [--overexpose 10] [--per-image] [--percentiles 1 99.8] [--split val] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed
from skimage.transform import resize

from grunet.augment import paint_outlier_nuclei
from grunet.checkpoint import load_checkpoint
from grunet.evaluate import image_counts, jsonable, summarize, without_objects_on
from grunet.preprocess import median_diameter, normalize, percentile_range, rescale_pair
from grunet.runtime import select_device
from grunet.segmentation import instances_from_probabilities
from grunet.train import predict_probabilities

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_fluo"


def otsu_watershed(image: np.ndarray, min_distance: int = 5) -> np.ndarray:
    """Classical baseline: Otsu foreground, split by watershed on the distance transform."""
    smooth = gaussian(image.astype(np.float32), sigma=1)
    mask = smooth > threshold_otsu(smooth)
    mask = ndi.binary_opening(mask, iterations=1)
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=ndi.label(mask)[0])
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.uint32)


def report(name: str, m: dict, seconds: float) -> None:
    t = m["thresholds"]
    f1s = " ".join(f"{t[k]['f1']:.3f}" for k in (0.5, 0.6, 0.7, 0.8, 0.9))
    print(
        f"{name:14} AP50 {m['ap50']:.4f}  F1@.5 {m['f1_50']:.4f}  P {t[0.5]['precision']:.3f}  "
        f"R {t[0.5]['recall']:.3f}  F1@.5/.6/.7/.8/.9 {f1s}  mIoU {m['mean_matched_iou']:.3f}  "
        f"SEG {m['seg']:.4f}  ({seconds:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--split", default="val")
    parser.add_argument("--scale", choices=("native", "label", "both"), default="both")
    parser.add_argument(
        "--diameter", type=float, default=17.0, help="D0 when the checkpoint records none"
    )
    parser.add_argument("--percentiles", type=float, nargs=2, default=None)
    parser.add_argument("--outliers", type=int, default=0, help="saturated nuclei per image")
    parser.add_argument(
        "--overexpose", type=float, default=0.0, help="clip the brightest %% of nucleus pixels"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--per-image", action="store_true", help="also print each image's F1@0.5, TP / FP / FN"
    )
    parser.add_argument("--json", help="write all metrics here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    table = pd.read_csv(root / "manifest.csv")
    ids = sorted(table.loc[table["split"] == args.split, "id"].astype(str))
    ckpt = load_checkpoint(args.model)
    model = ckpt.build_model().to(memory_format=torch.channels_last)
    stored = tuple(ckpt.metadata.get("normalization", {}).get("percentiles", (1.0, 99.8)))
    percentiles = tuple(args.percentiles) if args.percentiles else stored
    thresholds = ckpt.metadata.get("segmentation", {})
    d0 = float(ckpt.metadata.get("object_diameter") or args.diameter)
    device = select_device("cpu")
    scales = ("native", "label") if args.scale == "both" else (args.scale,)
    print(f"{len(ids)} {args.split} images of {root}; model {ckpt.path} ({ckpt.sha256[:12]})")
    print(
        f"segmentation thresholds {thresholds}; percentiles {percentiles}; D0 {d0:.2f} px; "
        f"scales {scales}; outlier nuclei per image {args.outliers}; "
        f"brightest {args.overexpose} % of nucleus pixels clipped"
    )
    counts: dict[str, list] = {}
    seconds: dict[str, float] = {}
    for n, i in enumerate(ids):
        image = tifffile.imread(root / "images" / f"{i}.tif").astype(np.float32)
        truth = tifffile.imread(root / "labels" / f"{i}.tif")
        painted = np.zeros(image.shape, bool)
        if args.outliers:
            image, painted = paint_outlier_nuclei(
                image, truth, args.outliers, np.random.default_rng(n)
            )
        if args.overexpose:
            ceiling = np.percentile(image[truth > 0], 100.0 - args.overexpose)
            image = np.minimum(image, ceiling)
        norm = normalize(image, *percentile_range(image, percentiles))
        for scale in scales:
            start = time.time()
            factor = d0 / (median_diameter(truth) or d0) if scale == "label" else 1.0
            x = rescale_pair(norm, truth, factor)[0] if factor != 1.0 else norm
            probs = predict_probabilities(model, x, device)
            if probs.shape[1:] != truth.shape:  # back to the image's grid, as grunet predicts
                probs = resize(probs, (3, *truth.shape), order=1, preserve_range=True)
            pred = instances_from_probabilities(probs, **thresholds)
            found = image_counts(truth, without_objects_on(pred, painted))
            counts.setdefault(f"grunet_{scale}", []).append(found)
            if args.per_image:  # a pooled figure can hide one image's flood of false objects
                at = found["thresholds"][0.5]
                print(
                    f"  {i[:12]} {scale:6s} F1@.5 {summarize(found)['f1_50']:.3f}  "
                    f"TP {at['tp']} FP {at['fp']} FN {at['fn']}"
                )
            seconds[f"grunet_{scale}"] = seconds.get(f"grunet_{scale}", 0.0) + time.time() - start
        if not args.no_baseline:
            start = time.time()
            base = without_objects_on(otsu_watershed(image), painted)
            counts.setdefault("otsu_ws", []).append(image_counts(truth, base))
            seconds["otsu_ws"] = seconds.get("otsu_ws", 0.0) + time.time() - start
    results = {k: summarize(v) for k, v in counts.items() if v}
    for name, m in results.items():
        report(name, m, seconds[name])
    if args.json:
        Path(args.json).write_text(json.dumps(jsonable(results), indent=2))


if __name__ == "__main__":
    main()
