"""The full-resolution convolutional GRU that every FRDU updates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from grunet.model.layers import BufferPool, eager_inference


class ConvGRU(nn.Module):
    """h' = (1-z)⊙h + z⊙LReLU(W_x*x + W_h*(r⊙h)), z and r sigmoid gates; 3×3 convs.

    The input terms W_xz*x, W_xr*x, W_x*x arrive precomputed as ``gx`` (the two gates' terms
    together, 2 c_h channels, then the candidate's, c_h): x is a bilinear upsampling of a
    low-resolution projection, so the FRDU applies W_x* there, at 1/4^s of the cost, and
    upsamples the result. At full resolution only the recurrent convs
    on h remain, which is where a naive implementation spends ~94% of its FLOPs.
    """

    def __init__(self, hidden: int, slope: float = 0.2):
        super().__init__()
        self.gates_h = nn.Conv2d(hidden, 2 * hidden, 3, padding=1, bias=False)  # W_hz, W_hr
        self.candidate_h = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)  # W_h
        self.slope = slope

    def forward(
        self, gx: Sequence[torch.Tensor], h: torch.Tensor, pool: BufferPool | None = None
    ) -> torch.Tensor:
        # gx: the input terms (W_xz*x ‖ W_xr*x, W_x*x), (B, 2 c_h, H, W) and (B, c_h, H, W),
        # consumed (their memory is reused in inference); h: (B, c_h, H, W)
        x_zr, x_c = gx
        # both gates in one conv: one pass over h, 2 c_h output channels fill the CPU's vectors
        zr = conv3x3_add(h, self.gates_h.weight, x_zr).sigmoid_()
        z, r = zr.chunk(2, dim=1)
        # in place only where autograd needs nothing, and not under torch.compile (which fuses
        # on its own and cannot trace ``out=`` into channels-last tensors: a graph break)
        inference = eager_inference()
        reuse = inference and pool is not None  # r⊙h dense in a spent buffer: the conv's input
        if reuse and h.dtype.itemsize < 4:
            # bf16 elementwise ops on the strided gate views have no vectorised path: copying
            # z and r dense first is 2-3× faster overall (1024², 2 threads); not so in fp32
            z = pool.take(h.shape, h).copy_(z)
            rh = pool.take(h.shape, h).copy_(r).mul_(h)
        else:
            rh = torch.mul(r, h, out=pool.take(h.shape, h)) if reuse else r * h
        candidate = conv3x3_add(rh, self.candidate_h.weight, x_c)
        candidate = F.leaky_relu(candidate, self.slope, inplace=inference)
        if not inference:
            return torch.lerp(h, candidate, z)  # (1-z)·h + z·candidate
        new_h = torch.lerp(h, candidate, z, out=candidate)  # element by element: safe in place
        if pool is not None:
            pool.give(zr, rh, z)  # (z only where it is a dense copy: views are not kept)
        return new_h


def conv3x3_add(x: torch.Tensor, weight: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv2d(x, weight, padding=1) + other``; in inference on CPUs one oneDNN kernel.

    The sum is fused into the convolution (oneDNN's sum post-op), written into ``other``'s
    memory: one pass over the full-resolution activations instead of three (conv output
    written, read back, sum written). Used where ``other`` is a temporary. Same arithmetic up
    to rounding; elsewhere (training, CUDA, torch.compile, which fuses on its own) it is the
    plain expression.
    """
    if _fusable(x, weight, other):
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            other, x, weight, None, [1, 1], [1, 1], [1, 1], 1, "add", None, None, [], None
        )
    return F.conv2d(x, weight, padding=1) + other


def _fusable(x: torch.Tensor, weight: torch.Tensor, other: torch.Tensor) -> bool:
    return (
        _HAS_FUSED_CONV
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == other.dtype
        and x.dtype in (torch.float32, torch.bfloat16)
        and x.is_contiguous(memory_format=torch.channels_last)
        and other.is_contiguous(memory_format=torch.channels_last)
    )


_HAS_FUSED_CONV = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, "_convolution_pointwise_"
)
