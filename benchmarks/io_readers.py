"""grunet's own readers vs bioio's on the same files: time and peak memory of a full streamed read.

Decides which of grunet's readers bioio replaces: each (reader, file) pair runs in a fresh
process that imports its libraries, then reads every pixel once through the reader's lazy dask
array (a sum per chunk, threaded scheduler, 2 workers); the peak RSS above the RSS after the
imports is the reader's own memory. Files: a SIZE x SIZE uint16 mosaic of real nuclei planes
written as a tiled zlib TIFF, an uncompressed contiguous TIFF, a tiled OME-TIFF, and grunet's
own OME-Zarr store of it; and the largest vendor file of ../shared/data/formats (CZI, through
bioio in both columns, as grunet reads it; its full ``grunet convert`` is measured too).

    python benchmarks/io_readers.py [--size 8192] [--repeats 2] [--workdir DIR]

Figures are perturbed when other jobs share the CPUs; pairs are interleaved and the best of
``--repeats`` runs is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from io_large_tiff import TILE, mosaic_tile, real_planes, write_contiguous, write_tiled  # noqa: E402

FORMATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "formats"

# Runs in the child process: import and open once, note RSS, open again and read every pixel.
CHILD = r"""
import json, resource, sys, time
reader, path = sys.argv[1], sys.argv[2]
import dask
if reader == "grunet":
    from grunet.io import read_image
    open_data = lambda: read_image(path).data
else:
    import bioio
    from grunet.io.vendor import reader_options
    n_scenes = len(bioio.BioImage(path).scenes)
    open_data = lambda: bioio.BioImage(path, **reader_options(path, n_scenes)).dask_data
open_data()  # warm-up: imports the plugin bioio picks, so that only reading is measured
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
data = open_data()
opened = time.perf_counter() - t
total = data.sum(dtype="float64").compute(scheduler="threads", num_workers=2)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"base": base, "peak": peak, "s": seconds, "open_s": opened,
                  "total": float(total), "chunks": list(data.chunksize),
                  "shape": list(data.shape)}))
"""


def run_child(reader: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, reader, str(path)], capture_output=True, text=True
    )
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_ome_tiff(path: Path, size: int, planes: np.ndarray) -> None:
    tiles = (
        mosaic_tile(planes, ty, tx) for ty in range(size // TILE) for tx in range(size // TILE)
    )
    tifffile.imwrite(
        path,
        tiles,
        shape=(size, size),
        dtype=np.uint16,
        tile=(TILE, TILE),
        compression="zlib",
        ome=True,
        metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
    )


def convert_peak(path: Path, out: Path) -> tuple[float, float, float]:
    """(peak RSS MiB of ``grunet convert``, MiB of the imports-only baseline, seconds)."""
    from io_large_tiff import peak_rss_mb

    imports = "from grunet.cli import build_parser; build_parser(); import grunet.io, bioio"
    base, _ = peak_rss_mb([sys.executable, "-c", imports])
    shutil.rmtree(out, ignore_errors=True)
    peak, seconds = peak_rss_mb(
        [sys.executable, "-m", "grunet", "convert", str(path), "-o", str(out)]
    )
    return peak, base, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    size = args.size // TILE * TILE
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grunet-readers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    planes = real_planes()
    files = {
        "tiled zlib TIFF": workdir / "tiled.tif",
        "contiguous TIFF": workdir / "contiguous.tif",
        "tiled OME-TIFF": workdir / "tiled.ome.tif",
        "OME-Zarr (grunet store)": workdir / "store.ome.zarr",
    }
    write_tiled(files["tiled zlib TIFF"], size, planes)
    write_contiguous(files["contiguous TIFF"], size, planes)
    write_ome_tiff(files["tiled OME-TIFF"], size, planes)
    from grunet.io import read_image, write_image

    write_image(files["OME-Zarr (grunet store)"], read_image(files["tiled zlib TIFF"]), pyramid=0)
    vendor = (
        sorted(FORMATS.glob("*.czi"), key=lambda p: p.stat().st_size) if FORMATS.is_dir() else []
    )
    if vendor:
        files[f"CZI {vendor[-1].name[:24]}... (bioio both)"] = vendor[-1]
    mib = size * size * 2 / 2**20
    print(f"mosaic {size} x {size} uint16 = {mib:.0f} MiB; best of {args.repeats} runs")
    print(f"{'file':44s} {'reader':7s} {'seconds':>8s} {'MiB above imports':>18s}  chunks")
    for label, path in files.items():
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for reader in ("grunet", "bioio"):  # interleaved
                result = run_child(reader, path)
                old = best.get(reader)
                if old is None or "error" in old:
                    best[reader] = result
                elif "error" not in result:  # best time and lowest peak of the runs
                    old["s"] = min(old["s"], result["s"])
                    old["peak"] = min(old["peak"], result["peak"])
        for reader, r in best.items():
            if "error" in r:
                print(f"{label:44s} {reader:7s} error: {r['error'][:80]}")
                continue
            print(
                f"{label:44s} {reader:7s} {r['s']:8.2f} {r['peak'] - r['base']:18.0f}  "
                f"{tuple(r['chunks'])} (sum {r['total']:.6g})"
            )
    if vendor:
        biggest = max(
            (p for p in FORMATS.iterdir() if p.suffix in (".czi", ".nd2", ".lif")),
            key=lambda p: p.stat().st_size,
        )
        peak, base, seconds = convert_peak(biggest, workdir / "vendor_out")
        print(
            f"grunet convert {biggest.name} ({biggest.stat().st_size / 2**20:.1f} MiB): "
            f"peak RSS {peak:.0f} MiB, {peak - base:.0f} MiB above the imports "
            f"(python + grunet CLI + bioio), {seconds:.1f} s"
        )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
