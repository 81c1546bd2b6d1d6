"""``grunet report``: one self-contained HTML QC page for an experiment."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report: overlays, counts, cell sizes, training, provenance",
        description="Write one self-contained HTML page (figures embedded) with per-sample label "
        "overlays, cell counts over time per sample and group, cell-size distributions, training "
        "curves and validation metrics (with --train-dir) and the provenance of every output.",
    )
    parser.add_argument("--counts", help="experiment counts CSV (grunet count)")
    parser.add_argument(
        "--class-areas",
        metavar="CSV",
        help="a semantic model's class_areas.csv: report class maps and areas instead of cells",
    )
    parser.add_argument(
        "--tables", nargs="+", default=[], help="per-cell (or class-area) Parquet tables"
    )
    parser.add_argument("--images", nargs="+", required=True, help="image stores with labels")
    parser.add_argument("--probs", nargs="+", default=[], help="probability stores (provenance)")
    parser.add_argument("--model", help="checkpoint used for prediction (its sha256 is shown)")
    parser.add_argument("--train-dir", help="output folder of grunet train (curves, metrics)")
    parser.add_argument(
        "--config-files", nargs="+", default=[], help="config files shown verbatim (provenance)"
    )
    parser.add_argument(
        "--group-by", default="condition", help="metadata column for grouped plots (if present)"
    )
    parser.add_argument("--frames", type=int, default=3, help="overlays per sample (default 3)")
    parser.add_argument(
        "--max-overlay-samples", type=int, default=48, help="overlays of at most N samples (48)"
    )
    parser.add_argument("--title", default="grunet report", help="page title")
    parser.add_argument("-o", "--output", required=True, help="HTML file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from grunet.errors import InputError
    from grunet.report import build_report

    if args.class_areas:
        from grunet.report_semantic import build_semantic_report

        path = build_semantic_report(
            args.output,
            class_areas=args.class_areas,
            images=args.images,
            tables=args.tables,
            probs=args.probs,
            model=args.model,
            train_dir=args.train_dir,
            config_files=args.config_files,
            frames=args.frames,
            max_overlay_samples=args.max_overlay_samples,
            title=args.title,
            overwrite=args.overwrite,
        )
        print(f"wrote {path}")
        return 0
    if not args.counts or not args.tables:
        raise InputError(None, "--counts and --tables are needed (or --class-areas)")
    path = build_report(
        args.output,
        counts=args.counts,
        tables=args.tables,
        images=args.images,
        probs=args.probs,
        model=args.model,
        train_dir=args.train_dir,
        config_files=args.config_files,
        group_by=args.group_by or None,
        frames=args.frames,
        max_overlay_samples=args.max_overlay_samples,
        title=args.title,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    return 0
