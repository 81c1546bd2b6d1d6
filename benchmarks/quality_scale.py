"""Scale robustness: dsb2018_fluo val images resized ×0.33 … ×5, segmented three ways.

Each val image is resized (linear, antialiased; labels nearest neighbour) and segmented with
``grunet.segment`` at (a) the automatically estimated diameter, (b) the true diameter (median
equivalent diameter of the resized labels) and (c) no rescaling (the model's own diameter, i.e.
grunet before object scale). Metrics are pooled over the 20 images (see grunet.evaluate); the
table prints F1@0.5 and SEG per scale, and the estimate's median ratio to the true diameter;
``--json`` also keeps each image's estimate ratio and F1@0.5 at the automatic diameter.

    python benchmarks/quality_scale.py [--model CKPT] [--scales 0.33 0.5 1 2 3 5] [--json OUT]
        [--augment]
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

import grunet
from grunet.evaluate import image_counts, jsonable, summarize
from grunet.preprocess import median_diameter, normalize_channels
from grunet.scale import estimate_diameter, resized_annotated

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_fluo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--scales", type=float, nargs="+", default=[0.33, 0.5, 1.0, 2.0, 3.0, 5.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write all metrics here")
    parser.add_argument(
        "--augment", action="store_true", help="test-time augmentation (mirror images)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    manifest = pd.read_csv(root / "manifest.csv")
    ids = sorted(manifest.loc[manifest["split"] == "val", "id"].astype(str))
    model = grunet.load_model(args.model, device="cpu", augment=args.augment)
    d0 = model.object_diameter
    print(
        f"{len(ids)} val images of {root}; model {model.path} ({model.sha256[:12]}), D0 {d0:.2f}"
        f"{', test-time augmentation' if args.augment else ''}"
    )
    header = "scale  F1@.5 auto / true / none    SEG auto / true / none    est/true  s/img"
    print(header)
    results = {}
    for factor in args.scales:
        counts = {"auto": [], "true": [], "none": []}
        ratios, started = [], time.perf_counter()
        for image_id in ids:
            image, labels = resized_annotated(
                tifffile.imread(root / "images" / f"{image_id}.tif"),
                tifffile.imread(root / "labels" / f"{image_id}.tif"),
                factor,
            )
            truth = median_diameter(labels)
            found = estimate_diameter(model, [normalize_channels(image[None])]).diameter
            ratios.append(np.nan if found is None else found / truth)
            for mode, diameter in (("auto", found or d0), ("true", truth), ("none", d0)):
                pred = grunet.segment(image, model, diameter=diameter)
                counts[mode].append(image_counts(labels, pred))
        seconds = (time.perf_counter() - started) / len(ids)
        m = {mode: summarize(c) for mode, c in counts.items()}
        results[factor] = {
            **m,
            "estimate_ratio_median": float(np.nanmedian(ratios)),
            # per image, to see which images a change to the estimate moves
            "per_image": {
                image_id: {"estimate_ratio": r, "auto_f1_50": summarize([c])["f1_50"]}
                for image_id, r, c in zip(ids, ratios, counts["auto"])
            },
        }
        f1 = " / ".join(f"{m[k]['f1_50']:.3f}" for k in ("auto", "true", "none"))
        seg = " / ".join(f"{m[k]['seg']:.3f}" for k in ("auto", "true", "none"))
        ratio = np.nanmedian(ratios)
        print(f"×{factor:<5g} {f1}   {seg}   {ratio:.2f}      {seconds:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(jsonable(results), indent=1))


if __name__ == "__main__":
    main()
