"""Semantic quality on CamVid (11 classes, 360x480): mIoU, global and class-average accuracy.

Every image of the split is predicted whole with the checkpoint's own preprocessing (per-channel
mean/std of metadata "normalization", resized by metadata "input_scale"; class scores resized
back to 360x480 before the argmax) and scored against the full-resolution labels, void (255)
left out; the confusion matrix is pooled over images (see grunet.semantic_metrics).

``--api`` predicts through ``grunet.segment`` instead (the user-facing inference path) and also
reports the share of pixels where both paths agree.

    python benchmarks/quality_camvid.py [--model camvid] [--split val] [--threads 2]
        [--api] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from grunet.checkpoint import load_checkpoint
from grunet.evaluate import jsonable
from grunet.semantic_data import load_split
from grunet.semantic_metrics import (
    confusion_matrix,
    plot_confusion,
    semantic_metrics,
    write_confusion_csv,
)
from grunet.semantic_train import class_scores
from grunet.task import ignore_index, model_task, semantic_classes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="camvid", help="checkpoint path or shipped name")
    parser.add_argument("--data", default=str(DATA), help="CamVid folder (manifest.csv)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--api", action="store_true", help="also predict with grunet.segment")
    parser.add_argument("--out", help="write metrics.json, confusion.csv/png here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ckpt = load_checkpoint(args.model)
    meta = ckpt.metadata
    if model_task(meta) != "semantic":
        raise SystemExit(f"{ckpt.path}: not a semantic checkpoint")
    n = ckpt.config.classes
    names = [c.name for c in semantic_classes(meta, n)]
    ignore = ignore_index(meta)
    scale = float(meta.get("input_scale", 1.0))
    norm = meta["normalization"]
    mean = [m for m in norm["mean"]]
    std = [s for s in norm["std"]]
    samples = load_split(
        args.data,
        args.split,
        n_classes=n,
        ignore_index=ignore,
        input_scale=scale,
        limit=args.limit,
    )
    model = ckpt.build_model()
    model = model.to(memory_format=torch.channels_last)
    device = torch.device("cpu")
    confusion = np.zeros((n, n), dtype=np.int64)
    agree = total = 0
    api_model = None
    if args.api:
        import grunet

        api_model = grunet.load_model(args.model, device="cpu")
        full = load_split(
            args.data,
            args.split,
            n_classes=n,
            ignore_index=ignore,
            input_scale=1.0,
            limit=args.limit,
        )
    start = time.time()
    for i, s in enumerate(samples):
        logits = class_scores(
            model, s.image[None], mean, std, device, out_shape=s.full_labels.shape
        )
        pred = logits[0].argmax(0).numpy()
        confusion += confusion_matrix(s.full_labels, pred, n, ignore)
        if api_model is not None:
            import grunet

            other = np.asarray(grunet.segment(full[i].image.transpose(2, 0, 1), api_model))
            agree += int((other == pred).sum())
            total += pred.size
    seconds = time.time() - start
    m = semantic_metrics(confusion, names)
    print(f"model {ckpt.path} (sha256 {ckpt.sha256[:12]}), input_scale {scale}")
    print(
        f"CamVid {args.split}: {len(samples)} images at 360x480, {m['n_pixels']} labelled px, "
        f"{seconds:.1f} s ({seconds / len(samples):.2f} s/image, {args.threads} threads)"
    )
    print(
        f"mIoU {m['mean_iou']:.4f}  global accuracy {m['global_accuracy']:.4f}  "
        f"class-average accuracy {m['class_average_accuracy']:.4f}"
    )
    for name, c in m["per_class"].items():
        iou = "n/a" if c["iou"] is None else f"{c['iou']:.4f}"
        acc = "n/a" if c["accuracy"] is None else f"{c['accuracy']:.4f}"
        print(f"  {name:<12} IoU {iou}  accuracy {acc}")
    if total:
        print(f"grunet.segment agrees with the reference on {agree / total:.5%} of pixels")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result = {
            **m,
            "model": str(ckpt.path),
            "sha256": ckpt.sha256,
            "split": args.split,
            "n_images": len(samples),
            "seconds": seconds,
            "api_agreement": agree / total if total else None,
            "confusion": confusion.tolist(),
        }
        (out / "metrics.json").write_text(json.dumps(jsonable(result), indent=2))
        write_confusion_csv(confusion, names, out / "confusion.csv")
        plot_confusion(confusion, names, out / "confusion.png")


if __name__ == "__main__":
    main()
