"""``grunet evaluate``: instance segmentation metrics of predicted vs. ground-truth labels."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="AP/F1 at IoU 0.5-0.9, precision, recall, matched IoU and CTC SEG",
        description="Compare predicted instance labels with ground truth (paired in order; "
        "TIFF or OME-Zarr stores with labels/cells). Writes OUTDIR/metrics.json (overall and "
        "per image) and OUTDIR/per_image.csv.",
    )
    parser.add_argument("--pred", nargs="+", required=True, help="predicted label images")
    parser.add_argument("--truth", nargs="+", required=True, help="ground-truth label images")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from grunet.evaluate import evaluate_files

    result = evaluate_files(args.pred, args.truth, args.output)
    t = result["thresholds"]
    print(
        f"{result['n_images']} images, {result['n_true']} true / {result['n_pred']} predicted "
        f"objects: AP50 {result['ap50']:.4f}  F1@0.5 {result['f1_50']:.4f}  "
        f"F1@0.75 {t[0.75]['f1']:.4f}  F1@0.9 {t[0.9]['f1']:.4f}  SEG {result['seg']:.4f}"
    )
    return 0
