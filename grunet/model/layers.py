"""Small building blocks shared by the GRUU-Net modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Normalisation by name; group norm uses up to 8 groups that divide ``channels``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvNormAct(nn.Sequential):
    """conv → norm → LeakyReLU; the default unit of every FRDU."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, slope: float = 0.2):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            norm_layer(norm, cout),
            nn.LeakyReLU(slope, inplace=True),
        )


class BufferPool:
    """Full-resolution buffers of one inference forward pass, handed on from unit to unit.

    Every FRDU needs a few full-resolution tensors (the upsampled GRU input terms, the new
    state h) for as long as the previous unit's became free. Reusing those instead of
    allocating new ones keeps fresh pages out of the forward: buffers of 4 MiB and more are
    mapped one by one (:mod:`grunet.memory`), and faulting in a new mapping costs the kernel
    a page fault and a zero fill per page (1088² forward: 107k page faults without the pool,
    48k with it; about 10 % of the forward's CPU time).
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[torch.Tensor]] = {}

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A channels-last ``(B, C, H, W)`` buffer (uninitialised) of ``like``'s dtype/device."""
        free = self._free.get((tuple(shape), like.dtype, like.device))
        if free:
            return free.pop()
        return torch.empty(
            shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last
        )

    def give(self, *tensors: torch.Tensor) -> None:
        """Return tensors nothing reads any more; views and other layouts are left to torch."""
        for t in tensors:
            if (
                t._base is None
                and t.dim() == 4
                and t.is_contiguous(memory_format=torch.channels_last)
            ):
                self._free.setdefault((tuple(t.shape), t.dtype, t.device), []).append(t)


def eager_inference() -> bool:
    """Whether the hand-written inference paths apply (lerp upsampling, buffers handed on):
    no autograd, which needs the plain ops and its own tensors, and not inside torch.compile,
    which fuses and plans memory itself."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def upsample_bilinear(x: torch.Tensor, factor: int, pool: BufferPool | None = None) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)``.

    For channels-last tensors in inference it is computed as ``factor`` ``lerp`` calls per
    axis, each writing one output phase (every factor-th row or column) through a strided
    view: on CPUs 3-6× faster than torch's kernel for the narrow (c_h = 12) bf16
    channels-last tensors of the GRU inputs, whose channel counts are too small for its
    vectorised path. Same numbers up to rounding; training and torch.compile use torch's
    kernel. With ``pool`` the result and the intermediate come from (and the intermediate
    goes back to) the pool.
    """
    channels_last = x.stride(1) == 1 and x.shape[1] > 1  # also channel slices of such tensors
    if factor == 1 or not channels_last or not eager_inference():
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    pool = BufferPool() if pool is None else pool
    b, c, h, w = x.shape
    wide = pool.take((b, c, h, w * factor), x)  # (B, C, h, W)
    out = pool.take((b, c, h * factor, w * factor), x)  # (B, C, H, W)
    t = x.permute(0, 2, 3, 1)  # (B, h, w, C): dense for channels-last storage
    _upsample_axis(t, factor, 2, wide.permute(0, 2, 3, 1))
    _upsample_axis(wide.permute(0, 2, 3, 1), factor, 1, out.permute(0, 2, 3, 1))
    pool.give(wide)
    return out  # (B, C, H, W) channels-last


def max_pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``F.max_pool2d(x, factor)`` (``factor`` a power of two dividing H and W).

    In inference on channels-last tensors it is computed as pairwise maxima of strided views,
    rows then columns, halving each axis ``log2(factor)`` times: torch's pooling kernel has no
    vectorised path for the narrow (c_h = 12) channels-last state h, and in bf16 it is 2-6×
    slower than these maxima (1024², 2 threads; fp32 1.3-1.7×, with ATen's AVX512 or AVX2
    kernels). Max is exact, so the result is identical. Training and torch.compile use
    torch's kernel (its gradient picks one of tied inputs).
    """
    c, h, w = x.shape[1:]
    halvings = factor.bit_length() - 1
    exact = factor == 1 << halvings and h % factor == 0 and w % factor == 0
    channels_last = x.stride(1) == 1 and c > 1
    if factor == 1 or not (exact and channels_last and eager_inference()):
        return F.max_pool2d(x, factor)
    for _ in range(halvings):
        x = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
        x = torch.maximum(x[..., 0::2], x[..., 1::2])
    return x


def _upsample_axis(x: torch.Tensor, factor: int, dim: int, out: torch.Tensor) -> None:
    """Linear upsampling of one axis into ``out`` (half-pixel centres, edges clamped)."""
    n = x.shape[dim]
    phases = out.unflatten(dim, (n, factor))
    for k in range(factor):
        # output f·j + k samples the input at j + s, s = (k + 0.5)/f - 0.5 in (-0.5, 0.5)
        s = (k + 0.5) / factor - 0.5
        phase = phases.select(dim + 1, k)
        edge = 0 if s < 0 else n - 1  # the output row whose neighbour lies outside: clamped
        if n > 1:
            inner = phase.narrow(dim, 1 if s < 0 else 0, n - 1)
            torch.lerp(x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1), s + 1.0 if s < 0 else s,
                       out=inner)  # fmt: skip
        phase.narrow(dim, edge, 1).copy_(x.narrow(dim, edge, 1))
