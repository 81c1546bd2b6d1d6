"""Converting a TIFF far larger than a chunk keeps memory bounded (slow; run with -m slow)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "io_large_tiff.py"


def _bench():
    spec = importlib.util.spec_from_file_location("io_large_tiff", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tiled", "contiguous"])
def test_large_tiff_converts_with_memory_far_below_its_size(tmp_path, demo_images, layout):
    bench = _bench()
    size = 16384  # 512 MiB of uint16
    src = tmp_path / f"mosaic_{layout}.tif"
    writer = bench.write_tiled if layout == "tiled" else bench.write_contiguous
    writer(src, size, bench.real_planes())
    imports = "from grunet.cli import build_parser; build_parser(); import grunet.io"
    base_rss, _ = bench.peak_rss_mb([sys.executable, "-c", imports])
    command = [sys.executable, "-m", "grunet", "convert", str(src), "-o", str(tmp_path / "out")]
    rss, _ = bench.peak_rss_mb(command)
    image_mib = size * size * 2 / 2**20
    assert rss - base_rss < 0.25 * image_mib, (rss, base_rss)
    check = subprocess.run(
        [sys.executable, "-c", "import zarr, sys; print(zarr.open(sys.argv[1]).shape)",
         str(tmp_path / "out" / f"mosaic_{layout}.ome.zarr" / "0")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert check.stdout.strip() == f"(1, 1, 1, {size}, {size})"
