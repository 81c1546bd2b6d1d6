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
    parser.add_argument("--min-size", type=int, help="remove cells under N px (default 0)")
    parser.add_argument("--min-seed-size", type=int, help="ignore seeds under N px (default 4)")
    parser.add_argument(
        "--seed-threshold", type=float, help="P(interior) of seeds (default: the model's, or 0.5)"
    )
    parser.add_argument(
        "--foreground-threshold",
        type=float,
        help="1 - P(background) of cells (default: the model's, or 0.5)",
    )
    parser.add_argument("--grow-radius", type=int, help="max growth from a seed (px, default 10)")
    parser.add_argument(
        "--max-hole-size", type=int, help="fill enclosed holes up to N px (0: off; default 64)"
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
    from grunet.segmentation import SegmentOptions, segment_store

    given = {
        "seed_threshold": args.seed_threshold,
        "foreground_threshold": args.foreground_threshold,
        "min_seed_size": args.min_seed_size,
        "grow_radius": args.grow_radius,
        "max_hole_size": args.max_hole_size,
        "min_size": args.min_size,
    }
    options = {key: value for key, value in given.items() if value is not None}
    try:
        SegmentOptions(**options)
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
