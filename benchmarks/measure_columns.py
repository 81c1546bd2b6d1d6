"""Cost of each per-cell column of `grunet measure` (regionprops properties), on real cells.

Cells come from the shipped model's segmentation of a mosaic of real nuclei images (see
``segment_memory.py``), tiled to ``--size``. Every column is timed alone with
``skimage.measure.regionprops_table`` (``label`` only subtracted as the fixed per-cell cost);
properties that share a cached intermediate (the ellipse columns share the inertia tensor) are
also timed together, which is what a table with all of them pays. The last lines time grunet's
own computation of every column at once (``grunet.cellprops.region_rows``, which `grunet measure`
runs per block) on the same cells, and its ratio to regionprops_table.

    python benchmarks/measure_columns.py --size 2048 --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from skimage.measure import regionprops_table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from segment_memory import source_plane, tiled  # noqa: E402

COLUMNS = [
    "centroid",
    "bbox",
    "area",
    "perimeter",
    "equivalent_diameter_area",
    "eccentricity",
    "solidity",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
]
GROUPS = {
    "ellipse (eccentricity, axes, orientation)": [
        "eccentricity",
        "axis_major_length",
        "axis_minor_length",
        "orientation",
    ],
    "intensity (mean, min, max)": ["intensity_mean", "intensity_min", "intensity_max"],
    "all columns": COLUMNS,
}


def timed(labels, image, properties, repeat) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        regionprops_table(labels, image, properties=["label", *properties])
        best = min(best, time.perf_counter() - start)
    return best


def timed_grunet(labels, image, repeat) -> float:
    """Seconds of grunet's whole-block computation of every column (labels as local int32)."""
    from grunet.cellprops import region_rows

    local = labels.astype(np.int32)
    channels = None if image is None else image[None]
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        region_rows(local, channels, (0, 0))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import grunet
    from grunet.preprocess import normalize_channels, percentile_range
    from grunet.segmentation import SegmentOptions, instances_from_probabilities

    image, what = source_plane()
    model = grunet.load_model(device="cpu")
    probs = model.predict_plane(normalize_channels(image[None], [percentile_range(image)]))
    probs = tiled(probs.astype(np.float16), args.size).compute()
    labels = instances_from_probabilities(
        probs, options=SegmentOptions(**model.segmentation_options), block=1024
    )
    image = tiled(image, args.size).compute()
    n = int(labels.max())
    base = timed(labels, image, [], args.repeat)
    single = {c: timed(labels, image, [c], args.repeat) - base for c in COLUMNS}
    total = sum(single.values())
    print(f"data: {what}, tiled to {args.size}^2, {n} cells; best of {args.repeat}")
    print(f"{'column':45s} {'s':>7s} {'us/cell':>8s} {'share':>6s}  (of the sum of columns)")
    print(f"{'label only (fixed per-cell cost)':45s} {base:7.2f} {base / n * 1e6:8.1f}")
    for column, cost in single.items():
        print(f"{column:45s} {cost:7.2f} {cost / n * 1e6:8.1f} {cost / total:6.1%}")
    for name, columns in GROUPS.items():
        cost = timed(labels, image, columns, args.repeat) - base
        print(f"{name + ' together':45s} {cost:7.2f} {cost / n * 1e6:8.1f} {cost / total:6.1%}")
    everything = timed(labels, image, COLUMNS, args.repeat)
    ours = timed_grunet(labels, image, args.repeat)
    shapes = timed_grunet(labels, None, args.repeat)
    print(f"{'regionprops_table, all columns (incl. label)':45s} {everything:7.2f} "
          f"{everything / n * 1e6:8.1f}")  # fmt: skip
    print(f"{'grunet region_rows, all columns':45s} {ours:7.2f} {ours / n * 1e6:8.1f}   "
          f"{everything / ours:.1f}x faster")  # fmt: skip
    print(f"{'grunet region_rows, shape columns only':45s} {shapes:7.2f} {shapes / n * 1e6:8.1f}")


if __name__ == "__main__":
    main()
