"""``grunet measure``: per-cell table (Parquet + CSV) of a labelled OME-Zarr store."""

from __future__ import annotations

import argparse


def parse_meta(items: list[str] | None) -> dict[str, str]:
    """["well=A01", "condition=ctrl"] -> {"well": "A01", "condition": "ctrl"}."""
    from grunet.errors import ConfigError

    meta = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--meta {item!r}: expected KEY=VALUE")
        meta[key.strip()] = value
    return meta


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "measure",
        help="measure every cell (per t, z plane) into a Parquet + CSV table",
        description="One row per cell and (t, z) plane: position (px, um), bbox, area, shape and "
        "per-channel intensity; equal to skimage regionprops_table on whole planes.",
    )
    parser.add_argument("store", help="<sample>.ome.zarr with labels")
    parser.add_argument("-o", "--output", required=True, help="cells/<sample>.parquet")
    parser.add_argument("--labels", default="cells", help="label image name (default: cells)")
    parser.add_argument("--sample", help="sample name (default: the store's name)")
    parser.add_argument(
        "--meta", nargs="*", metavar="KEY=VALUE", help="constant columns, e.g. well=A01"
    )
    parser.add_argument("--block", type=int, help="YX block size (default: the store chunks)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing tables")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from grunet.measure import measure_store

    measure_store(
        args.store,
        args.output,
        labels=args.labels,
        sample=args.sample,
        metadata=parse_meta(args.meta),
        overwrite=args.overwrite,
        block=args.block,
        progress=True,
    )
    return 0
