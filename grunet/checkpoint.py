"""Checkpoint files: weights + model config + training metadata, verified on load.

The file's sha256 is the model's identity in every output's provenance.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from grunet.atomic import atomic_output
from grunet.errors import CheckpointError
from grunet.model import GRUUNet, GRUUNetConfig

FORMAT = "grunet-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = Path(__file__).parent / "weights"
SHIPPED_MODEL = WEIGHTS / "small_dsb2018.pt"
# shipped models by name; None loads the nuclei model
SHIPPED_MODELS = {
    "nuclei": SHIPPED_MODEL,
    "dsb2018": SHIPPED_MODEL,
    "camvid": WEIGHTS / "small_camvid.pt",
}


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """The checkpoint file of a shipped model's name (see :data:`SHIPPED_MODELS`), of None (the
    nuclei model) or of a path. An existing file wins over a name.

    Raises:
        CheckpointError: neither an existing file nor a shipped model's name.
    """
    if name_or_path is None:
        return SHIPPED_MODEL
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path).strip().lower()
    if name in SHIPPED_MODELS:
        return SHIPPED_MODELS[name]
    names = ", ".join(sorted(SHIPPED_MODELS))
    raise CheckpointError(
        f"{path}: cannot load checkpoint (no such file, and not a shipped model name: {names})"
    )


@dataclass
class Checkpoint:
    """A loaded checkpoint: build the network with :meth:`build_model`."""

    config: GRUUNetConfig
    state_dict: dict
    metadata: dict = field(default_factory=dict)  # training data, epochs, metrics, normalisation
    sha256: str = ""
    path: Path | None = None
    # a second network that only estimates the object scale (see grunet.scale); None: this one
    scale_model: Checkpoint | None = None
    # a network for images this one must upscale by ``metadata["min_factor"]`` or more (nuclei
    # imaged a few px across; see grunet.scale.LOW_MAGNIFICATION); None: this one for all
    low_magnification_model: Checkpoint | None = None

    # the network built while loading (to check the weights fit), handed out by the first
    # build_model so that loading a model builds each network once
    _verified: GRUUNet | None = field(default=None, repr=False, compare=False)

    def build_model(self) -> GRUUNet:
        """The network with these weights, in eval mode on the CPU (a new one on every call)."""
        if self._verified is not None:
            model, self._verified = self._verified, None
            return model
        model = GRUUNet(self.config)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[:2]
            raise CheckpointError(
                f"{self.path}: weights do not fit the stored model config ({' '.join(first)})"
            ) from None
        return model.eval()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def first_sentence(text: str, limit: int = 100) -> str:
    """The first sentence of a library's error message, short enough for one line."""
    text = text.strip().splitlines()[0] if text.strip() else ""
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


def save_checkpoint(
    path: str | Path,
    model: GRUUNet,
    metadata: dict | None = None,
    *,
    overwrite: bool = True,
    scale_model: Checkpoint | None = None,
    low_magnification_model: Checkpoint | None = None,
    min_factor: float | None = None,
) -> str:
    """Write ``model`` (weights + config) and ``metadata`` atomically; return the file's sha256.

    ``scale_model``: a checkpoint whose network estimates the object scale for this one
    (:func:`grunet.scale.estimate_diameter`), stored inside the same file.
    ``low_magnification_model``: a checkpoint whose network predicts the images this one would
    upscale by ``min_factor`` or more, stored inside the same file.

    Example:
        >>> save_checkpoint("model.pt", GRUUNet(SMALL), {"epochs": 0})  # doctest: +SKIP
    """
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }
    if scale_model is not None:
        payload["scale_model"] = _companion(scale_model)
    if low_magnification_model is not None:
        if not (min_factor and min_factor > 1):
            raise ValueError(
                f"min_factor: a low-magnification model needs one > 1, got {min_factor}"
            )
        payload["low_magnification_model"] = _companion(
            low_magnification_model, min_factor=float(min_factor)
        )
    with atomic_output(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return file_sha256(path)


# Networks stored beside the main one: (payload key, name in errors, built and checked at load).
# The low-magnification network is built, and so checked, when an image first needs it.
COMPANIONS = (
    ("scale_model", "scale model", True),
    ("low_magnification_model", "low-magnification model", False),
)


def _companion(checkpoint: Checkpoint, **extra) -> dict:
    """The payload of a network stored inside another's checkpoint file."""
    return {
        "config": checkpoint.config.to_dict(),
        "state_dict": checkpoint.state_dict,
        "metadata": {
            "object_diameter": checkpoint.metadata.get("object_diameter"),
            "segmentation": checkpoint.metadata.get("segmentation") or {},
            "normalization": checkpoint.metadata.get("normalization"),
            "sha256": checkpoint.sha256,
            **extra,
        },
    }


def load_checkpoint(path: str | Path | None = None) -> Checkpoint:
    """Read and verify a checkpoint: a path, a shipped model's name ("nuclei" / "dsb2018",
    "camvid"), or ``None`` for the small nuclei model shipped in the package.

    Raises:
        CheckpointError: the file is missing, corrupt, truncated, or not a grunet checkpoint.
    """
    name = None if path is None else str(path)
    path = resolve_model_path(path)
    shipped = {p: n for n, p in SHIPPED_MODELS.items()}
    if not path.exists() and path in shipped:
        raise CheckpointError(
            f"{path}: the shipped model {name or shipped[path]!r} is not installed in this grunet "
            "(its weights file is missing); pass a checkpoint path from `grunet train` instead"
        )
    if not path.is_file():
        where = "no such file" if not path.exists() else "not a file"
        raise CheckpointError(f"{path}: cannot load checkpoint ({where})")
    data = path.read_bytes()
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means a bad file
        reason = first_sentence(str(err)) or type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable grunet checkpoint (corrupt or truncated: {reason})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a grunet checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format_version']} is newer than this grunet "
            f"understands ({FORMAT_VERSION}); upgrade grunet"
        )
    checkpoint = _checkpoint(payload, path, hashlib.sha256(data).hexdigest())
    for key, what, verify in COMPANIONS:
        if isinstance(payload.get(key), dict):
            inner = payload[key]
            sha = str(inner.get("metadata", {}).get("sha256", ""))
            setattr(checkpoint, key, _checkpoint(inner, path, sha, what, verify))
    low = checkpoint.low_magnification_model
    if low is not None and not float(low.metadata.get("min_factor") or 0) > 1:
        raise CheckpointError(f"{path}: its low-magnification model has no valid min_factor (> 1)")
    return checkpoint


def _checkpoint(
    payload: dict, path: Path, sha256: str, what: str = "model", verify: bool = True
) -> Checkpoint:
    """A :class:`Checkpoint` of one network's part of a checkpoint file; ``verify`` builds the
    network now (else its first build checks that its weights fit)."""
    try:
        config = GRUUNetConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid {what} config in checkpoint ({err})") from None
    checkpoint = Checkpoint(
        config=config,
        state_dict=payload["state_dict"],
        metadata=payload.get("metadata", {}),
        sha256=sha256,
        path=path,
    )
    if verify:  # mismatching weights fail now, with the file named
        checkpoint._verified = checkpoint.build_model()
    return checkpoint
