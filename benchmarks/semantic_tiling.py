"""Tiled vs whole-image semantic prediction on a 2048² mosaic of CamVid frames.

The mosaic (val frames side by side, cropped to SIZE²) is written to an OME-Zarr store and
predicted the way ``grunet predict`` does it (block by block, windows of ``--tile`` network
pixels with ``--halo`` context, the checkpoint's input scale applied per block); the whole image
is predicted in one window. Prints the argmax agreement of the two class maps (target ≥ 99.9 %),
the largest probability difference and the wall times.

    python benchmarks/semantic_tiling.py                       # shipped "camvid" model
    python benchmarks/semantic_tiling.py --model runs/camvid/best.pt --tile 256 --halo 64
    (defaults: tile 512, the model's halo: grunet.predict.SEMANTIC_HALO = 256)

Needs ../shared/data/camvid (skips with a message where it is absent).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"


def mosaic(root: Path, size: int) -> np.ndarray:
    """(3, size, size) uint8: CamVid val frames (train where val is short) tiled row by row."""
    import imageio.v3 as iio

    frames = sorted((root / "images").glob("*.png"))
    manifest = root / "manifest.csv"
    if manifest.exists():
        import pandas as pd

        table = pd.read_csv(manifest)
        val = set(table.loc[table["split"] == "val", "id"])
        frames = [f for f in frames if f.stem in val] + [f for f in frames if f.stem not in val]
    first = iio.imread(frames[0])[..., :3]
    fy, fx = first.shape[:2]
    rows, cols = -(-size // fy), -(-size // fx)
    out = np.zeros((rows * fy, cols * fx, 3), dtype=np.uint8)
    for k in range(rows * cols):
        frame = iio.imread(frames[k % len(frames)])[..., :3]
        r, c = divmod(k, cols)
        out[r * fy : (r + 1) * fy, c * fx : (c + 1) * fx] = frame[:fy, :fx]
    return np.ascontiguousarray(out[:size, :size].transpose(2, 0, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="camvid", help="semantic checkpoint or shipped name")
    parser.add_argument("--data", default=str(CAMVID), help="the CamVid folder")
    parser.add_argument("--size", type=int, default=2048, help="mosaic side, px")
    parser.add_argument("--tile", type=int, default=512, help="window core, network px")
    parser.add_argument(
        "--halo", type=int, help="context per side, network px (default: the model's, 256)"
    )
    parser.add_argument("--chunk", type=int, default=512, help="store chunk (block), image px")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    root = Path(args.data)
    if not (root / "images").is_dir():
        print(f"skipped: no CamVid images under {root}", file=sys.stderr)
        return 0
    import torch

    from grunet.class_map import argmax_classes
    from grunet.io import read_array, read_image, write_image
    from grunet.predict import Predictor, predict_store
    from grunet.task import ignore_index, normalize_mean_std

    torch.set_num_threads(args.threads)
    model = Predictor.from_checkpoint(args.model, device="cpu")
    if not model.semantic:
        print(f"{args.model}: not a semantic model", file=sys.stderr)
        return 2
    ignore = ignore_index(model.metadata)
    image = mosaic(root, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "mosaic.npy", image)
        store = write_image(
            Path(tmp) / "mosaic.ome.zarr",
            read_image(Path(tmp) / "mosaic.npy", axes="CYX"),
            chunks=args.chunk,
        )
        start = time.perf_counter()
        predict_store(
            store, Path(tmp) / "p.zarr", model=model, tile=args.tile, halo=args.halo, progress=False
        )
        tiled_s = time.perf_counter() - start
        probs, attrs = read_array(Path(tmp) / "p.zarr", "probs")
        tiled = np.asarray(probs[0, :, 0], dtype=np.float32)
    normalised = normalize_mean_std(image, model.metadata["normalization"])
    start = time.perf_counter()
    side = -(-max(image.shape[1:]) // 32) * 32
    whole = model.predict_plane(normalised, tile=side, halo=0, factor=model.input_scale)
    whole_s = time.perf_counter() - start
    same = argmax_classes(tiled, ignore) == argmax_classes(whole, ignore)
    agree = float(same.mean())
    top2 = np.sort(whole, axis=0)[-2:]
    clear = (top2[1] - top2[0]) >= 0.05  # pixels the whole-image prediction is not torn on
    tied = (~same & ~clear).sum() / max(1, (~same).sum())
    print(
        f"model {model.path} (input_scale {model.input_scale}, {model.classes} classes); mosaic "
        f"{args.size}² of CamVid frames; tile {attrs['tile']} halo {attrs['halo']} (network px), "
        f"blocks of {args.chunk}² image px"
    )
    print(
        f"argmax agreement tiled vs whole: {100 * agree:.3f} % (target >= 99.9 %); "
        f"max |dp| {np.abs(tiled - whole).max():.4f}; tiled {tiled_s:.1f} s, whole {whole_s:.1f} s"
    )
    print(
        f"pixels with a top-2 margin >= 0.05 (whole image): {100 * clear.mean():.1f} %, of which "
        f"{100 * same[clear].mean():.3f} % agree; near-ties hold {100 * tied:.1f} % "
        "of the disagreements"
    )
    return 0 if agree >= 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
