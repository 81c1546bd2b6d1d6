"""Fast inference path (bf16 autocast, channels-last) vs fp32: argmax agreement on real images.

The 20 dsb2018_fluo val images, normalised with the checkpoint's percentiles and resized to its
object diameter by their label-derived diameter (the scale the model works at; native when the
checkpoint records none). Prints the pooled argmax agreement and the largest probability change.

    python benchmarks/fast_path_agreement.py [--model CKPT] [--split val]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch

from grunet.checkpoint import load_checkpoint
from grunet.preprocess import median_diameter, normalize, percentile_range, rescale_pair
from grunet.runtime import prepare_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_fluo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    table = pd.read_csv(root / "manifest.csv")
    ids = sorted(table.loc[table["split"] == args.split, "id"].astype(str))
    ckpt = load_checkpoint(args.model)
    percentiles = tuple(ckpt.metadata.get("normalization", {}).get("percentiles", (1.0, 99.8)))
    d0 = ckpt.metadata.get("object_diameter")
    reference = prepare_model(ckpt.build_model(), "cpu", fast=False)
    fast = prepare_model(ckpt.build_model(), "cpu", fast=True, compile=False)
    same = total = 0
    worst = 0.0
    for i in ids:
        image = tifffile.imread(root / "images" / f"{i}.tif")
        truth = tifffile.imread(root / "labels" / f"{i}.tif")
        x = normalize(image, *percentile_range(image, percentiles))
        if d0 and median_diameter(truth):
            x = rescale_pair(x, truth, d0 / median_diameter(truth))[0]
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None]
        with torch.no_grad():
            a, b = reference(t), fast(t)
        same += int((a.argmax(1) == b.argmax(1)).sum())
        total += a[:, 0].numel()
        worst = max(worst, float((a.softmax(1) - b.softmax(1)).abs().max()))
    print(
        f"{len(ids)} {args.split} images, model {ckpt.path} ({ckpt.sha256[:12]}), D0 {d0}: "
        f"argmax agreement {100 * same / total:.3f} %, max |dp| {worst:.3f}"
    )


if __name__ == "__main__":
    main()
