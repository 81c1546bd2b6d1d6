"""Segment + measure throughput (MPix/s) and peak memory versus image size.

Compares grunet's chunked path (probabilities and image read from zarr, labels written to zarr,
the table measured block by block) with a single in-memory pass of ``scipy.ndimage.label`` +
``skimage.measure.regionprops_table`` on the same plane (same properties). Planes are real
nuclei: a mosaic of crowded DSB2018 fluorescence images (../shared/data) or, without it, a plane
of napari's 3D nuclei, with the shipped model's predicted probabilities, tiled to the requested
sizes (see ``segment_memory.py``).

Each path runs in its own process; memory is the peak RSS it adds (the baseline's in-memory inputs
included). The chunked path's should stay flat as the image grows; the baseline's grows with it.

    python benchmarks/segment_measure.py --sizes 1024 2048 4096 --block 1024 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import zarr
from scipy import ndimage as ndi
from skimage.measure import regionprops_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from segment_memory import source_plane, tiled  # noqa: E402

from grunet.measure import measure_stack  # noqa: E402
from grunet.memory import keep_large_buffers_off_heap  # noqa: E402
from grunet.segmentation import segment_probabilities  # noqa: E402

PROPERTIES = ["label", "centroid", "bbox", "area", "perimeter", "equivalent_diameter_area"]
PROPERTIES += ["eccentricity", "solidity", "axis_major_length", "axis_minor_length"]
PROPERTIES += ["orientation", "intensity_mean", "intensity_min", "intensity_max"]


def real_inputs() -> tuple[np.ndarray, np.ndarray, str]:
    """A 1024^2 mosaic of real nuclei and the shipped model's probabilities of it."""
    import grunet
    from grunet.preprocess import normalize_channels, percentile_range

    image, source = source_plane()
    model = grunet.load_model(device="cpu")
    probs = model.predict_plane(normalize_channels(image[None], [percentile_range(image)]))
    return image, probs.astype(np.float16), source


class RssPeak:
    """Peak resident memory (MiB) above the level at start, sampled every 2 ms in a thread."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(kind: str, folder: Path, block: int, threads: int) -> dict:
    """One path in this (fresh) process: seconds, added peak RSS (MiB), cells found."""
    dask.config.set(scheduler="threads", num_workers=threads)
    shutil.rmtree(folder / "labels.zarr", ignore_errors=True)  # from an earlier repeat
    with RssPeak() as memory:
        if kind == "baseline":  # the single in-memory pass holds its inputs (not timed)
            interior = zarr.open_array(str(folder / "probs.zarr"), mode="r")[0, 1, 0]
            image = zarr.open_array(str(folder / "image.zarr"), mode="r")[0, 0, 0]
            start = time.perf_counter()
            labels, _ = ndi.label(interior > 0.5)
            table = regionprops_table(labels, image[..., None], properties=PROPERTIES)
            cells = len(table["label"])
        else:
            if kind == "grunet":  # as the `grunet` command does; "grunet-heap": glibc's default
                keep_large_buffers_off_heap()
            start = time.perf_counter()
            probs = da.from_zarr(str(folder / "probs.zarr"))
            segment_probabilities(probs, block=block).to_zarr(str(folder / "labels.zarr"))
            labels = da.from_zarr(str(folder / "labels.zarr"))
            image = da.from_zarr(str(folder / "image.zarr"))
            cells = len(measure_stack(labels, image, block=block))
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "mib": memory.mib, "cells": cells}


def child(kind: str, folder: Path, block: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--folder", str(folder)]
    command += ["--block", str(block), "--threads", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def write_inputs(folder: Path, image: np.ndarray, probs: np.ndarray, block: int) -> None:
    size = image.shape[-1]
    chunks = (1, 1, 1, block, block)
    z = zarr.open_array(
        str(folder / "probs.zarr"), mode="w", shape=(1, 3, 1, size, size),
        chunks=(1, 3, 1, block, block), dtype=np.float16,
    )  # fmt: skip
    z[0, :, 0] = probs
    zi = zarr.open_array(
        str(folder / "image.zarr"), mode="w", shape=(1, 1, 1, size, size), chunks=chunks,
        dtype=image.dtype,
    )  # fmt: skip
    zi[0, 0, 0] = image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--block", type=int, default=1024, help="chunk/block size (px)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per path (noise)")
    parser.add_argument(
        "--glibc-heap", action="store_true", help="grunet path without the command's heap setting"
    )
    parser.add_argument(
        "--child", choices=("baseline", "grunet", "grunet-heap"), help=argparse.SUPPRESS
    )
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.folder, args.block, args.threads)))
        return
    image0, probs0, source = real_inputs()
    print(f"data: {source}, the shipped model's probabilities, tiled; block {args.block}; "
          f"{args.threads} threads (baseline: 1); one process per run")  # fmt: skip
    print("size   MPix | base s  MPix/s  +MiB | grunet s  MPix/s  +MiB | speed ratio  cells")
    ours_kind = "grunet-heap" if args.glibc_heap else "grunet"
    for size in args.sizes:
        image, probs = tiled(image0, size).compute(), tiled(probs0, size).compute()
        with tempfile.TemporaryDirectory() as tmp:
            write_inputs(Path(tmp), image, probs, args.block)
            runs = [
                (child("baseline", Path(tmp), args.block, args.threads),
                 child(ours_kind, Path(tmp), args.block, args.threads))
                for _ in range(args.repeat)
            ]  # fmt: skip
        base = min((b for b, _ in runs), key=lambda r: r["seconds"])
        ours = min((o for _, o in runs), key=lambda r: r["seconds"])
        mpix = size * size / 1e6
        print(
            f"{size:>5} {mpix:6.1f} | {base['seconds']:6.2f}  {mpix / base['seconds']:6.2f}  "
            f"{base['mib']:4.0f} | {ours['seconds']:8.2f}  {mpix / ours['seconds']:6.2f}  "
            f"{ours['mib']:4.0f} | {base['seconds'] / ours['seconds']:10.2f}x  "
            f"{ours['cells']} (base {base['cells']})"
        )


if __name__ == "__main__":
    main()
