"""Peak memory of ``grunet convert`` on vendor (CZI) files much larger than one plane.

The vendor samples of ../shared/data/formats are a few MB (``benchmarks/io_readers.py`` measures
the largest); this writes synthetic CZIs of real nuclei planes with pylibCZIrw (part of the
``formats`` extra) and converts each in a fresh process:

- a Z-stack of ``--planes`` planes of SIZE x SIZE uint16 (bioio-czi reads one plane per chunk, so
  memory should not grow with the number of planes);
- one SIZE2 x SIZE2 plane (bioio-czi reads a whole plane as one chunk: this shows that cost).

    python benchmarks/io_vendor_large.py [--size 2048] [--planes 32] [--size2 8192]

Peak RSS is compared with a process that only imports the grunet CLI, grunet.io, bioio and the
CZI plugin. Timings are perturbed when other jobs share the CPUs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from io_large_tiff import TILE, mosaic_tile, peak_rss_mb, real_planes  # noqa: E402


def mosaic(planes: np.ndarray, size: int, seed: int) -> np.ndarray:
    rows = [
        np.concatenate([mosaic_tile(planes, ty + seed, tx) for tx in range(size // TILE)], axis=1)
        for ty in range(size // TILE)
    ]
    return np.concatenate(rows, axis=0)


def write_czi(path: Path, size: int, n_planes: int, planes: np.ndarray) -> None:
    from pylibCZIrw import czi as pyczi

    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for z in range(n_planes):
            czi.write(mosaic(planes, size, z), plane={"T": 0, "C": 0, "Z": z})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="side of the Z-stack's planes")
    parser.add_argument("--planes", type=int, default=32, help="planes of the Z-stack")
    parser.add_argument("--size2", type=int, default=8192, help="side of the single plane")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grunet-czi-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    planes = real_planes()
    imports = (
        "from grunet.cli import build_parser; build_parser(); import grunet.io, bioio, bioio_czi;"
        "import bioio_czi.pylibczirw_reader.reader, bioio_czi.aicspylibczi_reader.reader"
    )
    base, _ = peak_rss_mb([sys.executable, "-c", imports])
    print(f"baseline (python + grunet CLI + bioio + bioio-czi imports): peak RSS {base:.0f} MiB")
    size, size2 = args.size // TILE * TILE, args.size2 // TILE * TILE
    for label, side, n in (("z-stack", size, args.planes), ("one plane", size2, 1)):
        path = workdir / f"{label.replace(' ', '_')}.czi"
        write_czi(path, side, n, planes)
        image = side * side * 2 * n / 2**20
        out = workdir / "out"
        shutil.rmtree(out, ignore_errors=True)
        peak, seconds = peak_rss_mb(
            [sys.executable, "-m", "grunet", "convert", str(path), "-o", str(out)]
        )
        print(
            f"{label}: {n} x {side} x {side} uint16 ({image:.0f} MiB, one plane "
            f"{side * side * 2 / 2**20:.0f} MiB): convert peak RSS {peak:.0f} MiB, "
            f"{peak - base:.0f} MiB above baseline, {seconds:.1f} s"
        )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
