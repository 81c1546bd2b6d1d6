"""Device choice and the fast inference path (channels-last, bf16/fp16 autocast, compile).

Model code stays plain torch; everything about *how* it runs on a machine lives here, once.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import platform
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from grunet.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
NO_MIRRORS: tuple[tuple[int, ...], ...] = ((),)  # the image as it is
# test-time augmentation of micrographs (no up or down): the image and its three mirror images
MIRRORS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
# ... of scenes (the sky is up): the image and its left-right mirror image
LEFT_RIGHT_MIRRORS: tuple[tuple[int, ...], ...] = ((), (-1,))


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; an explicit but unavailable device is an error."""
    name = str(name).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICES:
        raise ConfigError(f"device: unknown device {name!r}; choose one of {DEVICES}")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA GPU is available; use 'auto'")
    if base == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: 'mps' requested but MPS is not available; use 'auto'")
    return torch.device(name)


# oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) that still include native bf16 instructions
_BF16_ISAS = ("ALL", "BF16", "AMX", "FP16", "AVX10")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 convolutions natively (AVX512-BF16 or AMX on x86).

    oneDNN also *accepts* bf16 on any AVX512 CPU (Skylake / Cascade Lake, common in clusters)
    by emulating it, and torch reports that as supported; there the bf16 forward is 2.0-2.3×
    slower than fp32 (``small`` 1024², oneDNN and ATen capped at AVX512 on an AMX host), so x86
    needs the instructions themselves, and a ``ONEDNN_MAX_CPU_ISA`` cap that keeps them.
    """
    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    if not supported or platform.machine().lower() not in ("x86_64", "amd64"):
        return supported
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    if not any(name in cap for name in _BF16_ISAS):
        return False
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(native or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision worth using on ``device``, or None for plain fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Autocast context for ``device`` (a no-op where reduced precision does not pay)."""
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# Measured on this repo's 2-core AMD EPYC (AVX512-BF16, no AMX), small preset, 512², bf16
# channels-last: torch.compile (inductor, frozen weights) runs ≈ 1.8× faster than eager, but the
# first compile costs ≈ 1 min on an idle machine and up to 6 min on a busy one (seconds with a
# warm inductor cache). At ≈ 0.5 MPix/s eager, compiling pays off beyond ≈ 200 MPix per job
# (e.g. 30 frames of 2.6k²); the demo time-lapse (8 MPix) runs eagerly. Since the eager forward
# was restructured (issue 18), compiled and eager `small` ran at the same MPix per CPU-second
# (512², Sapphire Rapids VM under load; 0.43-0.48 vs 0.48-0.51), and a compile took 234 s with
# a warm inductor cache, 2058 s cold: compiling is left to explicit requests and huge jobs.
# On a 2-core AMX host (session 30), once the GRU traced as one graph (its ``out=`` writes had
# broken the graph 13 times), compiled `small` (c_h = 12) ran at 0.78 MPix/s against 0.99 eager
# (1024², bf16, first call 59 s), compiled `paper` (c_h = 32) at 0.31 against 0.24 (first call
# 90 s): the hand-fused eager path wins for the narrow state. On CPUs "auto" compiles only
# models whose state is at least ``COMPILE_CPU_MIN_HIDDEN`` wide; on CUDA every large job.
COMPILE_MIN_PIXELS = 200_000_000
COMPILE_CPU_MIN_HIDDEN = 32
CACHE_ENV = "GRUNET_CACHE_DIR"


def cache_dir() -> Path:
    """grunet's cache folder: ``$GRUNET_CACHE_DIR``, else the platform's user cache folder.

    Holds inductor's compiled kernels (``inductor/``), so a later process compiling the same
    model reuses them; deleting it only costs a recompile.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("grunet"))


def has_cxx_compiler() -> bool:
    """True where inductor can build CPU kernels (it needs a C++ compiler)."""
    candidates = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    return any(c and shutil.which(c) for c in candidates)


def should_compile(
    device: torch.device,
    compile: bool | str,
    work_pixels: int | None,
    model: nn.Module | None = None,
) -> bool:
    """Resolve ``compile`` ("auto", True, False) for a job of ``work_pixels`` pixels of
    ``model`` (on CPUs "auto" compiles only wide models, see ``COMPILE_CPU_MIN_HIDDEN``)."""
    if compile == "auto":
        if work_pixels is None or work_pixels < COMPILE_MIN_PIXELS:
            return False
        if device.type == "cuda":
            return True
        hidden = getattr(getattr(model, "cfg", None), "hidden", 0)
        return device.type == "cpu" and hidden >= COMPILE_CPU_MIN_HIDDEN and has_cxx_compiler()
    if isinstance(compile, str):
        raise ConfigError(f"compile: expected 'auto', true or false, got {compile!r}")
    return bool(compile)


class PreparedModel:
    """A network ready for inference on one device: ``prepared(x)`` maps (B, C, H, W) → logits.

    Holds the fast-path choices (memory format, autocast dtype, compiled or eager) so callers
    only hand over float32 tensors. A compiled model that fails on first use (no C++ compiler,
    an unsupported op) falls back to eager with a warning, once.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        *,
        dtype: torch.dtype | None,
        channels_last: bool,
        compile: bool,
        cast: bool = False,
    ):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.cast = cast  # the model itself is in ``dtype``: inputs are cast, no autocast
        self.channels_last = channels_last
        self.compiled = compile
        self._forward = self._compile(model) if compile else model

    def _compile(self, model: nn.Module):
        # compiled kernels persist in grunet's cache folder (unless the user chose a folder)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
        # freezing folds conv+batch-norm and pre-packs weights; it applies under no_grad only.
        options = {"freezing": True} if self.device.type == "cpu" else None
        return torch.compile(model, dynamic=False, options=options)

    def _run(self, forward, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast_for(self.device, None if self.cast else self.dtype):
            return forward(x).float()

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype if self.cast else torch.float32
        x = x.to(self.device, dtype=dtype, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, classes, H, W) on the model's device."""
        x = self._input(x)
        if self.compiled:
            try:
                return self._run(self._forward, x)
            except Exception as err:  # inductor/dynamo failures have many types
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                warnings.warn(
                    f"torch.compile failed ({first}); running the model eagerly instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.compiled = False
                self._forward = self.model
        return self._run(self._forward, x)

    def probabilities(
        self, x: torch.Tensor, mirrors: Sequence[tuple[int, ...]] = NO_MIRRORS
    ) -> torch.Tensor:
        """Softmax over classes, float32, on the model's device.

        ``mirrors``: the flips (dims of ``x``) whose predictions are averaged, each flipped
        back to ``x``'s grid (test-time augmentation, :data:`MIRRORS`); one pass per entry,
        so memory stays that of one pass.
        """
        total = None
        for dims in mirrors:
            probs = torch.softmax(self(x.flip(dims) if dims else x), dim=1)
            probs = probs.flip(dims) if dims else probs
            total = probs if total is None else total.add_(probs)
        return total if len(mirrors) == 1 else total.div_(len(mirrors))

    def describe(self) -> dict:
        """The choices made, for provenance and benchmarks."""
        return {
            "device": str(self.device),
            "autocast": None if self.dtype is None or self.cast else _name(self.dtype),
            "dtype": _name(self.dtype or torch.float32),  # the precision the network runs in
            "channels_last": self.channels_last,
            "compiled": self.compiled,
        }


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (None → a no-op)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every conv → BatchNorm pair folded into the conv.

    Exact up to rounding; saves one full pass over the activations per folded norm (the network
    is memory-bound on CPUs). Pre-activation norms (norm → ReLU → conv) stay as they are. The
    original model, its parameter names and any checkpoint are untouched.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    model = copy_model(model).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
                and bn.running_mean is not None
            ):  # the copy's own conv takes the folded weights
                conv.weight, conv.bias = fuse_conv_bn_weights(
                    conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                    bn.weight, bn.bias,
                )  # fmt: skip
                setattr(module, bn_name, nn.Identity())
    return model


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy of ``model``: a network with a ``cfg`` (GRUU-Net) is rebuilt from it
    and given the weights, 5× faster than ``copy.deepcopy`` (0.03 vs 0.15 s for ``small``,
    paid by every process that predicts); anything else is deep-copied."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return copy.deepcopy(model)
    try:
        clone = type(model)(cfg)
        clone.load_state_dict(model.state_dict())
    except Exception:  # noqa: BLE001 - not rebuildable from its cfg: copy it as it is
        return copy.deepcopy(model)
    return clone.train(model.training)


def prepare_model(
    model: nn.Module,
    device: str | torch.device = "auto",
    *,
    fast: bool = True,
    compile: bool | str = "auto",
    work_pixels: int | None = None,
) -> PreparedModel:
    """Put ``model`` in eval mode on ``device`` with the fastest safe inference settings.

    Args:
        model: a network mapping (B, C, H, W) float → (B, classes, H, W) logits.
        device: "auto", "cpu", "cuda", "mps" or a ``torch.device``.
        fast: channels-last + reduced precision (bf16 autocast on CPUs with native bf16, bf16 or
            fp16 autocast on CUDA); False keeps plain fp32 (the reference).
        compile: ``torch.compile`` the model (True), never (False), or "auto": only when
            ``work_pixels`` is large enough for the compile time (1-6 min on 2 CPU cores) to pay
            off (see ``COMPILE_MIN_PIXELS``) and a C++ compiler exists on CPU.
        work_pixels: pixels the caller will push through the model (for "auto").

    Returns:
        A :class:`PreparedModel`; call it on float32 tensors to get float32 logits.

    Example:
        >>> prepared = prepare_model(GRUUNet(SMALL), "cpu")  # doctest: +SKIP
        >>> logits = prepared(torch.rand(1, 1, 512, 512))  # doctest: +SKIP
    """
    device = device if isinstance(device, torch.device) else select_device(device)
    model = model.eval()
    if fast:
        model = fold_batch_norms(model)  # a copy: the caller's model is left as it is
    model = model.to(device)
    dtype = autocast_dtype(device) if fast else None
    channels_last = fast and device.type in ("cpu", "cuda")
    if device.type == "cuda" and fast:
        torch.backends.cudnn.benchmark = True
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # On CPUs the whole network runs in bf16 (weights cast once): autocast would re-cast every
    # weight on every call, and the fused conv kernels of the model need one dtype throughout.
    cast = dtype is not None and device.type == "cpu"
    if cast:
        model = model.to(dtype)
    use_compile = fast and should_compile(device, compile, work_pixels, model)
    return PreparedModel(
        model,
        device,
        dtype=dtype,
        channels_last=channels_last,
        compile=use_compile,
        cast=cast,
    )
