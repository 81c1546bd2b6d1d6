"""grunet: segment, measure and count cells in whole microscopy experiments with GRUU-Net."""

from __future__ import annotations

__version__ = "0.1.0"

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
    if name == "segment":
        import grunet.segment  # a callable module: grunet.segment(image, ...) is the API

        return grunet.segment
    raise AttributeError(f"module 'grunet' has no attribute {name!r}")
