"""The epoch loop both trainers share (instance: :mod:`grunet.train`, semantic:
:mod:`grunet.semantic_train`): the network and its optimiser, one optimisation step, epochs of
``steps_per_epoch`` steps each followed by validation, the log, and the resume state.

What differs between tasks (the batch and loss of a step, how validation scores an epoch, what
the checkpoints carry) stays in each trainer; of files this module reads only the checkpoint
a run fine-tunes from and writes only the run's ``log.csv`` and ``val_metrics.json``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from grunet.atomic import atomic_output
from grunet.checkpoint import load_checkpoint
from grunet.errors import ConfigError
from grunet.evaluate import jsonable
from grunet.model import GRUUNet, preset


def initial_weights(path: str | Path, config) -> dict:
    """Weights of a checkpoint to fine-tune from; its model config must match this run's."""
    checkpoint = load_checkpoint(path)
    if checkpoint.config != config:
        raise ConfigError(f"init: {path} holds another model config than this run's 'model'")
    return checkpoint.state_dict


def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``floor`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EpochLoop:
    """Shared training loop. Subclasses call :meth:`_setup` and provide ``train_step`` (ending
    in :meth:`optimise`), ``validate_epoch``, ``save``, ``finish`` and ``score_key`` (the
    validation metric that picks ``best.pt``, higher is better)."""

    score_key: str

    def _setup(self, cfg: dict, out_dir: Path, device, **model_fields) -> None:
        """The network (``cfg["model"]`` preset, its fields overridden by ``cfg["model"]``
        and ``model_fields``), fine-tuning weights, AdamW with warm-up and cosine decay, RNGs."""
        self.cfg, self.out_dir, self.device = cfg, out_dir, device
        torch.manual_seed(cfg["seed"])
        model_cfg = dict(cfg["model"])
        name = model_cfg.pop("preset", "small")
        self.model = GRUUNet(preset(name, **{**model_cfg, **model_fields}))
        if cfg["init"]:
            self.model.load_state_dict(initial_weights(cfg["init"], self.model.cfg))
        self.model = self.model.to(device)
        if cfg["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"]
        )
        self.total_steps = cfg["epochs"] * cfg["steps_per_epoch"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, cfg["warmup_steps"], self.total_steps, cfg["min_lr_fraction"]),
        )
        self.rng = np.random.default_rng(cfg["seed"])
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.best: dict = {self.score_key: -1.0, "epoch": 0}

    # ---- steps
    def optimise(self, loss: torch.Tensor) -> float:
        """One optimiser step on ``loss`` (gradients clipped to ``grad_clip``); its value."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["grad_clip"])
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    # ---- epochs
    def run_epoch(self) -> dict:
        """``steps_per_epoch`` steps, validation, the log row, checkpoints; returns the row."""
        start = time.time()
        steps = self.cfg["steps_per_epoch"]
        bar = tqdm(
            range(steps),
            desc=f"epoch {self.epoch + 1}/{self.cfg['epochs']}",
            file=sys.stderr,
            leave=False,
            mininterval=5,
        )
        losses = []
        for _ in bar:
            losses.append(self.train_step())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        train_time = time.time() - start
        metrics, val_loss, columns = self.validate_epoch()
        self.epoch += 1
        row = {
            "epoch": self.epoch,
            "step": self.epoch * steps,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            **columns,
            "train_seconds": round(train_time, 1),
            "val_seconds": round(time.time() - start - train_time, 1),
        }
        self.history.append(row)
        score = metrics[self.score_key]
        improved = score > self.best[self.score_key]
        if improved:
            self.best = {self.score_key: score, "epoch": self.epoch, "metrics": metrics}
        self.save(improved)
        text = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        tqdm.write(" ".join(text), file=sys.stderr)
        return row

    def fit(self, stop_after: int | None = None) -> dict:
        """Train until ``epochs`` (or ``stop_after`` more epochs, to simulate a stopped run),
        then :meth:`finish`; returns the best epoch's record."""
        done = 0
        while self.epoch < self.cfg["epochs"]:
            if stop_after is not None and done >= stop_after:
                return self.best
            self.run_epoch()
            done += 1
        self.finish()
        return self.best

    # ---- outputs
    def resume_state(self) -> dict:
        """What :meth:`restore` needs to continue exactly where this epoch ended."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        }

    def restore(self, metadata: dict) -> dict:
        """Optimiser, schedule, RNGs, history and epoch from ``last.pt``'s metadata; returns its
        resume state (for what the subclass keeps there besides)."""
        state = metadata.get("resume")
        if state is None:
            raise ConfigError(f"{self.out_dir / 'last.pt'}: no resume state in checkpoint")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        self.epoch = int(metadata["epoch"])
        return state

    def write_log(self) -> None:
        """``log.csv``, one row per epoch (atomically, like every file of the run)."""
        path = self.out_dir / "log.csv"
        with atomic_output(path, overwrite=True) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)

    def write_val_metrics_file(self, content: dict) -> None:
        """``val_metrics.json``, atomically: a rerun takes its presence for a finished run."""
        with atomic_output(self.out_dir / "val_metrics.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(jsonable(content), indent=2))
