"""Compare training losses (class-weighted CE vs. focal) on the dsb2018_fluo val split.

Both runs use the same short budget, seed, patches and schedule (config/train_small.yaml with
fewer/smaller steps); only ``loss.name`` differs. Prints val F1@0.5 / AP50 / SEG per epoch.

    python benchmarks/quality_loss_compare.py -o /tmp/loss_compare [--steps 100 --epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from grunet.train import load_config, train

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--losses", nargs="+", default=["wce", "focal"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    results = {}
    for name in args.losses:
        cfg = load_config(
            REPO / "config" / "train_small.yaml",
            {
                "epochs": args.epochs,
                "steps_per_epoch": args.steps,
                "patch_size": args.patch,
                "warmup_steps": max(1, args.steps // 2),
                "threads": args.threads,
                "tune_thresholds": False,
                "loss": {"name": name},
            },
        )
        run_dir = out / name
        train(cfg, run_dir, resume=(run_dir / "last.pt").exists(), device="cpu")
        with open(run_dir / "log.csv") as fh:
            results[name] = list(csv.DictReader(fh))
    cols = ("val_loss", "val_f1_50", "val_ap50", "val_f1_75", "val_seg")
    print("loss   epoch " + " ".join(f"{c:>9}" for c in cols))
    for name, rows in results.items():
        for r in rows:
            print(f"{name:6} {r['epoch']:>5} " + " ".join(f"{float(r[c]):9.4f}" for c in cols))
    (out / "summary.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
