"""``grunet count``: cells per sample and t, or concatenate count CSVs of an experiment."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "count",
        help="count cells per sample and t (tables) or merge count CSVs (experiment)",
        description="Per-cell Parquet tables -> one row per (sample, t) with n_cells (distinct "
        "labels) and the sample's metadata columns; count CSVs are concatenated. Class-area "
        "tables of a semantic model (classes/<sample>.parquet) are concatenated into one CSV.",
    )
    parser.add_argument("inputs", nargs="+", metavar="TABLE_OR_COUNTS")
    parser.add_argument("-o", "--output", required=True, help="counts CSV to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from grunet.class_area import combine_class_areas, is_class_area_table
    from grunet.count import count_files

    if args.inputs and all(is_class_area_table(p) for p in args.inputs):
        combine_class_areas(args.inputs, args.output, overwrite=args.overwrite)
        return 0
    count_files(args.inputs, args.output, overwrite=args.overwrite)
    return 0
