"""Acquisition robustness: dsb2018_fluo val images as other microscopes and exposures record them.

Each of the 20 val images (native scale) is degraded one way and segmented with ``grunet.segment``
at the automatically estimated diameter and at the labels' true diameter:

- ``photonsN``: photon (Poisson) noise, the image scaled so that its 99.5th percentile collects N
  photons over 2 dark counts (a dim exposure; N = 20 is a noisy live-cell image);
- ``rampA``: an additive background rising linearly across the field (along the diagonal) from 0
  to A × the image's 99.5th percentile (uneven illumination, out-of-focus haze);
- ``blurS``: Gaussian blur of S px (defocus).

Metrics are pooled over the images (grunet.evaluate). The table prints F1@0.5 and SEG for both
diameters, the estimate's median ratio to the true diameter and the images it misses by more than
30 % (none: no estimate, the image used at the model's own scale).

    python benchmarks/quality_acquisition.py [--model CKPT] [--conditions clean photons20 ramp0.5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch
from scipy import ndimage as ndi

import grunet
from grunet.evaluate import image_counts, summarize
from grunet.preprocess import median_diameter, normalize_channels
from grunet.scale import estimate_diameter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_fluo"
CONDITIONS = ["clean", "photons50", "photons20", "ramp0.5", "ramp1", "blur1", "blur2"]


def degrade(image: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """The image as ``condition`` records it (see the module docstring)."""
    image = np.asarray(image, np.float32)
    top = float(np.percentile(image, 99.5))
    if condition == "clean":
        return image
    if condition.startswith("photons"):
        photons = float(condition.removeprefix("photons"))
        scaled = (image - image.min()) / max(top - float(image.min()), 1e-6)
        return rng.poisson(scaled * photons + 2.0).astype(np.float32)
    if condition.startswith("ramp"):
        amplitude = float(condition.removeprefix("ramp"))
        y, x = np.mgrid[: image.shape[0], : image.shape[1]] / max(image.shape)
        return image + amplitude * top * (x + y) / 2
    if condition.startswith("blur"):
        return ndi.gaussian_filter(image, float(condition.removeprefix("blur")))
    raise SystemExit(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--conditions", nargs="+", default=CONDITIONS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    manifest = pd.read_csv(root / "manifest.csv")
    ids = sorted(manifest.loc[manifest["split"] == "val", "id"].astype(str))
    model = grunet.load_model(args.model, device="cpu")
    print(f"{len(ids)} val images of {root}; model {model.path} ({model.sha256[:12]})")
    print("condition    F1@.5 auto / true   SEG auto / true   est/true  missed by >30 %   s/img")
    for condition in args.conditions:
        rng = np.random.default_rng(0)  # the same noise for every model compared
        counts = {"auto": [], "true": []}
        ratios, missed, started = [], [], time.perf_counter()
        for image_id in ids:
            image = tifffile.imread(root / "images" / f"{image_id}.tif").astype(np.float32)
            labels = tifffile.imread(root / "labels" / f"{image_id}.tif")
            image = degrade(image, condition, rng)
            truth = median_diameter(labels)
            found = estimate_diameter(model, [normalize_channels(image[None])]).diameter
            ratio = np.nan if found is None else found / truth
            ratios.append(ratio)
            if not 1 / 1.3 <= ratio <= 1.3:
                missed.append(f"{image_id[:6]}:{'none' if found is None else f'{ratio:.2f}'}")
            for mode, diameter in (("auto", found or model.object_diameter), ("true", truth)):
                counts[mode].append(
                    image_counts(labels, grunet.segment(image, model, diameter=diameter))
                )
        seconds = (time.perf_counter() - started) / len(ids)
        m = {mode: summarize(c) for mode, c in counts.items()}
        print(
            f"{condition:12s} {m['auto']['f1_50']:.3f} / {m['true']['f1_50']:.3f}      "
            f"{m['auto']['seg']:.3f} / {m['true']['seg']:.3f}     {np.nanmedian(ratios):.2f}"
            f"      {' '.join(missed) or '-'}   {seconds:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
