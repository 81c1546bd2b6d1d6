"""A tqdm progress bar (stderr) for dask computations."""

from __future__ import annotations

import sys

from dask.callbacks import Callback
from tqdm.auto import tqdm


class TqdmCallback(Callback):
    """Count finished dask tasks on a tqdm bar; use as ``dask.compute(..., callbacks=[cb])``."""

    def __init__(self, desc: str = "", enabled: bool = True):
        super().__init__()
        self.desc = desc
        self.enabled = enabled
        self.bar: tqdm | None = None

    def _start_state(self, dsk, state):
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self.bar = tqdm(
            total=total,
            desc=self.desc,
            unit="task",
            file=sys.stderr,
            disable=not self.enabled,
            mininterval=0.2 if sys.stderr.isatty() else 30.0,  # keep workflow logs short
        )

    def _posttask(self, key, result, dsk, state, worker_id):
        if self.bar is not None:
            self.bar.update(1)

    def _finish(self, dsk, state, errored):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_callbacks(enabled: bool, desc: str) -> list[tuple]:
    """Callbacks for ``dask.compute(..., callbacks=...)``: a tqdm bar when ``enabled``."""
    return [TqdmCallback(desc)._callback] if enabled else []
