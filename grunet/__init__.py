"""grunet: segment, measure and count cells in whole microscopy experiments with GRUU-Net."""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

if "torch" not in sys.modules:
    # OpenMP worker threads that spin at the barrier after every op stall whenever another
    # process holds a core: on a shared 2-core machine a 128² forward took 1-8 s instead of
    # 0.05 s, 512² ran 4-6× slower (benchmarks/predict_throughput.py). Sleeping waits cost
    # microseconds per op. Read once when torch loads; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from grunet.errors import CheckpointError, ConfigError, GrunetError, InputError  # noqa: E402

__all__ = [
    "CheckpointError",
    "ConfigError",
    "GrunetError",
    "InputError",
    "__version__",
    "load_model",
    "segment",
]


def __getattr__(name: str):
    # Lazy, so `import grunet` stays cheap and stage modules load only when used.
    if name == "load_model":
        from grunet.api import load_model

        return load_model
    if name == "segment":  # the API function; the stage module is grunet.segmentation
        from grunet.api import segment

        return segment
    raise AttributeError(f"module 'grunet' has no attribute {name!r}")
