"""``grunet segment``: probabilities → instance labels inside the image's OME-Zarr store."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="turn class probabilities into instance labels (STORE/labels/NAME)",
        description="Seeds from P(interior), grown into the foreground, merged across chunks: the "
        "labels equal those of segmenting each plane (or volume) at once.",
    )
    parser.add_argument("probs", help="<sample>.probs.zarr from `grunet predict`")
    parser.add_argument("--image", required=True, help="the <sample>.ome.zarr store to label")
    parser.add_argument("--name", default="cells", help="labels name (default: cells)")
    parser.add_argument("--min-size", type=int, default=0, help="remove cells under N px")
    parser.add_argument("--min-seed-size", type=int, default=4, help="ignore seeds under N px")
    parser.add_argument("--seed-threshold", type=float, default=0.5, help="P(interior) of seeds")
    parser.add_argument(
        "--foreground-threshold", type=float, default=0.5, help="1 - P(background) of cells"
    )
    parser.add_argument("--grow-radius", type=int, default=10, help="max growth from a seed (px)")
    parser.add_argument(
        "--max-hole-size", type=int, default=64, help="fill enclosed holes up to N px (0: off)"
    )
    parser.add_argument(
        "--mode", choices=("auto", "2d", "3d"), default="auto", help="3d: across z (auto: Z > 1)"
    )
    parser.add_argument("--block", type=int, help="YX block size (default: the probs chunks)")
    parser.add_argument("-o", "--done", help="write a JSON sentinel here when finished")
    parser.add_argument("--overwrite", action="store_true", help="replace existing labels")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from grunet.atomic import atomic_output
    from grunet.errors import ConfigError
    from grunet.segment import SegmentOptions, segment_store

    try:
        options = SegmentOptions(
            seed_threshold=args.seed_threshold,
            foreground_threshold=args.foreground_threshold,
            min_seed_size=args.min_seed_size,
            grow_radius=args.grow_radius,
            max_hole_size=args.max_hole_size,
            min_size=args.min_size,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    three_d = {"auto": None, "2d": False, "3d": True}[args.mode]
    path = segment_store(
        args.probs,
        args.image,
        name=args.name,
        overwrite=args.overwrite,
        options=options,
        three_d=three_d,
        block=args.block,
        progress=True,
    )
    if args.done:
        with atomic_output(args.done, overwrite=True) as tmp:
            tmp.write_text(json.dumps({"labels": str(path), "probs": str(args.probs)}) + "\n")
    return 0
