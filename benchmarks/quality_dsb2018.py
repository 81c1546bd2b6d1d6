"""Segmentation quality on the dsb2018_fluo val split: a checkpoint vs. Otsu + watershed.

Whole val images, normalised with the checkpoint's percentiles, segmented with the thresholds
stored in the checkpoint (metadata "segmentation"); metrics pooled over images (see
grunet.evaluate). Prints AP50, F1 at IoU 0.5...0.9, precision/recall, matched IoU and SEG.

    python benchmarks/quality_dsb2018.py [--model CKPT] [--split val] [--json OUT.json]
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

from grunet.checkpoint import load_checkpoint
from grunet.evaluate import image_counts, jsonable, summarize
from grunet.preprocess import normalize, percentile_range
from grunet.runtime import select_device
from grunet.segment import instances_from_probabilities
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
        f"{name:10} AP50 {m['ap50']:.4f}  F1@.5 {m['f1_50']:.4f}  P {t[0.5]['precision']:.3f}  "
        f"R {t[0.5]['recall']:.3f}  F1@.5/.6/.7/.8/.9 {f1s}  mIoU {m['mean_matched_iou']:.3f}  "
        f"SEG {m['seg']:.4f}  ({seconds:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json", help="write all metrics here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    table = pd.read_csv(root / "manifest.csv")
    ids = sorted(table.loc[table["split"] == args.split, "id"].astype(str))
    ckpt = load_checkpoint(args.model)
    model = ckpt.build_model().to(memory_format=torch.channels_last)
    percentiles = tuple(ckpt.metadata.get("normalization", {}).get("percentiles", (1.0, 99.8)))
    thresholds = ckpt.metadata.get("segmentation", {})
    device = select_device("cpu")
    print(f"{len(ids)} {args.split} images of {root}; model {ckpt.path} ({ckpt.sha256[:12]})")
    print(f"segmentation thresholds {thresholds}; percentiles {percentiles}")
    counts = {"grunet": [], "otsu_ws": []}
    seconds = {"grunet": 0.0, "otsu_ws": 0.0}
    for i in ids:
        image = tifffile.imread(root / "images" / f"{i}.tif")
        truth = tifffile.imread(root / "labels" / f"{i}.tif")
        start = time.time()
        probs = predict_probabilities(
            model, normalize(image, *percentile_range(image, percentiles)), device
        )
        counts["grunet"].append(
            image_counts(truth, instances_from_probabilities(probs, **thresholds))
        )
        seconds["grunet"] += time.time() - start
        if not args.no_baseline:
            start = time.time()
            counts["otsu_ws"].append(image_counts(truth, otsu_watershed(image)))
            seconds["otsu_ws"] += time.time() - start
    results = {k: summarize(v) for k, v in counts.items() if v}
    for name, m in results.items():
        report(name, m, seconds[name])
    if args.json:
        Path(args.json).write_text(json.dumps(jsonable(results), indent=2))


if __name__ == "__main__":
    main()
