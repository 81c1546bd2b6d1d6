"""What every model exported from a training run carries (instance: :func:`grunet.train.
export_model`, semantic: :func:`grunet.semantic_train.export_semantic_model`), and the JSON
sidecar written beside a shipped checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from grunet.atomic import atomic_output
from grunet.checkpoint import Checkpoint, load_checkpoint


def run_provenance(run_dir: str | Path) -> tuple[Checkpoint, list[dict], dict]:
    """A finished run's ``best.pt``, its ``log.csv`` rows, and the provenance every exported
    model records: grunet version, preset, data and splits, epochs, best epoch, steps and
    training minutes (train + validation time of every epoch in the log)."""
    from grunet import __version__

    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir / "best.pt")
    meta, cfg = checkpoint.metadata, checkpoint.metadata["config"]
    with open(run_dir / "log.csv") as fh:
        log = list(csv.DictReader(fh))
    seconds = sum(float(r["train_seconds"]) + float(r["val_seconds"]) for r in log)
    provenance = {
        "grunet_version": __version__,
        "preset": meta["preset"],
        "data": {
            "dataset": Path(cfg["data"]["root"]).name if cfg["data"]["root"] else None,
            "train_split": cfg["data"]["train_split"],
            "val_split": cfg["data"]["val_split"],
            "n_train_images": meta["n_train_images"],
            "n_val_images": meta["n_val_images"],
        },
        "epochs": cfg["epochs"],
        "best_epoch": meta["epoch"],
        "steps": meta["steps"],
        "training_minutes": round(seconds / 60, 1),
    }
    return checkpoint, log, provenance


def write_sidecar(dest: str | Path, sha: str, meta: dict) -> dict:
    """``dest.json``: the shipped file's name, sha256 and size with its metadata (atomically,
    like the checkpoint beside it)."""
    dest = Path(dest)
    sidecar = {"file": dest.name, "sha256": sha, "bytes": dest.stat().st_size, **meta}
    with atomic_output(dest.with_suffix(".json"), overwrite=True) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar
