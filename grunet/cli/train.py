"""``grunet train``: train GRUU-Net from a YAML config (see grunet.train.DEFAULTS)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a GRUU-Net on annotated images",
        description="Train GRUU-Net; writes OUTDIR/best.pt, last.pt, log.csv, curves.png, "
        "val_metrics.json. --resume continues a stopped run exactly. A config with "
        "'task: semantic' trains an N-class model on data.root (images/, labels/, manifest.csv; "
        "best epoch by val mIoU).",
    )
    parser.add_argument("-c", "--config", required=True, help="training config YAML")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from OUTDIR/last.pt")
    parser.add_argument("--images", nargs="+", help="training images (TIFF/OME-Zarr)")
    parser.add_argument("--labels", nargs="+", help="instance labels, one per image")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from grunet.train import train

    best = train(
        args.config,
        args.output,
        resume=args.resume,
        images=args.images,
        labels=args.labels,
        device=args.device,
    )
    if "mean_iou" in best:  # semantic model
        print(f"best epoch {best.get('epoch')}: val mIoU = {best['mean_iou']:.4f}")
    else:
        print(f"best epoch {best.get('epoch')}: val F1@0.5 = {best.get('f1_50', float('nan')):.4f}")
    return 0
