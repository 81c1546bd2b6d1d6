"""``grunet evaluate``: instance metrics of predicted vs. ground-truth labels, or semantic
metrics of class maps (``--semantic``, or detected from ``--model``)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="instance AP/F1/SEG, or semantic mIoU/accuracy/confusion (--semantic)",
        description="Compare predictions with ground truth (paired in order). Instance labels "
        "(TIFF or OME-Zarr stores with labels/cells): OUTDIR/metrics.json (overall and per "
        "image) and OUTDIR/per_image.csv. Semantic class maps (PNG/TIFF, or stores with "
        "labels/classes): global and class-average accuracy, per-class IoU, mean IoU (ignore "
        "index left out) in OUTDIR/metrics.json and per_image.csv, plus confusion.csv and "
        "confusion.png. The task comes from --model's checkpoint, else from --semantic.",
    )
    parser.add_argument("--pred", nargs="+", required=True, help="predicted label images")
    parser.add_argument("--truth", nargs="+", required=True, help="ground-truth label images")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--semantic", action="store_true", help="evaluate class maps")
    task.add_argument("--instance", action="store_true", help="evaluate instance labels")
    parser.add_argument(
        "--model",
        help="checkpoint (path or shipped name) that made the predictions: its task, class "
        "names and ignore index are used",
    )
    parser.add_argument(
        "--classes", help="semantic without --model: a classes.csv or the number of classes"
    )
    parser.add_argument(
        "--ignore-index", type=int, default=None, help="semantic: label value left out (255)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from grunet.semantic_evaluate import checkpoint_task, require_task
    from grunet.task import INSTANCE, SEMANTIC

    semantic = args.semantic
    if args.model is not None:
        if args.semantic or args.instance:
            require_task(args.model, SEMANTIC if args.semantic else INSTANCE)
        else:
            semantic = checkpoint_task(args.model)[0] == SEMANTIC
    if semantic:
        return _run_semantic(args)
    from grunet.evaluate import evaluate_files

    result = evaluate_files(args.pred, args.truth, args.output)
    t = result["thresholds"]
    print(
        f"{result['n_images']} images, {result['n_true']} true / {result['n_pred']} predicted "
        f"objects: AP50 {result['ap50']:.4f}  F1@0.5 {result['f1_50']:.4f}  "
        f"F1@0.75 {t[0.75]['f1']:.4f}  F1@0.9 {t[0.9]['f1']:.4f}  SEG {result['seg']:.4f}"
    )
    return 0


def _run_semantic(args: argparse.Namespace) -> int:
    from grunet.semantic_evaluate import evaluate_semantic_files

    names, n = None, None
    if args.classes and args.model is None:
        if args.classes.isdigit():
            n = int(args.classes)
        else:
            from grunet.semantic_data import read_classes_csv

            ignore = 255 if args.ignore_index is None else args.ignore_index
            names = [c["name"] for c in read_classes_csv(args.classes, ignore)]
    result = evaluate_semantic_files(
        args.pred,
        args.truth,
        args.output,
        model=args.model,
        class_names=names,
        n_classes=n,
        ignore=args.ignore_index,
    )
    print(
        f"{result['n_images']} images, {result['n_pixels']} labelled pixels: "
        f"mIoU {result['mean_iou']:.4f}  global accuracy {result['global_accuracy']:.4f}  "
        f"class-average accuracy {result['class_average_accuracy']:.4f}"
    )
    for name, m in result["per_class"].items():
        iou = "n/a" if m["iou"] is None else f"{m['iou']:.4f}"
        print(f"  {name:<16} IoU {iou}")
    return 0
