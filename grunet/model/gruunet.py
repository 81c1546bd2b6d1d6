"""GRUU-Net (Wollmann et al., Medical Image Analysis 2019): FRDUs around one full-res ConvGRU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grunet.model.config import GRUUNetConfig
from grunet.model.frdu import FRDU
from grunet.model.layers import (
    BufferPool,
    ConvNormAct,
    eager_inference,
    max_pool,
    norm_layer,
    upsample_bilinear,
)


class ResidualHead(nn.Module):
    """Residual block on h, then a 1×1 conv to class logits."""

    def __init__(self, hidden: int, classes: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            norm_layer(norm, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            norm_layer(norm, hidden),
        )
        self.classify = nn.Conv2d(hidden, classes, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.classify(F.leaky_relu(h + self.body(h), 0.2))


class GRUUNet(nn.Module):
    """Maps (B, C, H, W) images of any size to (B, classes, H, W) logits.

    Inputs are padded (replicate) to a multiple of 2^S and the logits cropped back, so outputs
    align with inputs pixel for pixel.
    """

    def __init__(self, cfg: GRUUNetConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = ConvNormAct(
            cfg.in_channels, cfg.hidden, cfg.stem_kernel, cfg.norm, cfg.negative_slope
        )
        units, cin = [], cfg.hidden
        for s, width in enumerate(cfg.encoder_widths, start=1):  # scales 1/2 ... 1/2^S
            units.append(FRDU(cin, width, 2**s, cfg))
            cin = width
        for s, width in zip(range(cfg.scales - 1, 0, -1), cfg.decoder_widths):  # back to 1/2
            units.append(FRDU(cin, width, 2**s, cfg))
            cin = width
        self.encoder = nn.ModuleList(units[: cfg.scales])
        self.decoder = nn.ModuleList(units[cfg.scales :])
        self.head = ResidualHead(cfg.hidden, cfg.classes, cfg.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, self.cfg.stride)
        h = self.stem(x)  # (B, c_h, H, W): h_0
        o = max_pool(h, 2)  # (B, c_h, H/2, W/2)
        pool = BufferPool() if eager_inference() else None  # inference: units hand on their buffers
        for i, unit in enumerate(self.encoder):
            if i > 0:
                o = max_pool(o, 2)
            o, h = _unit_step(unit, o, h, pool)
        for unit in self.decoder:
            o = upsample_bilinear(o, 2)
            o, h = _unit_step(unit, o, h, pool)
        return self.head(h)[..., :height, :width]  # (B, classes, H, W)


def _unit_step(unit: FRDU, o: torch.Tensor, h: torch.Tensor, pool: BufferPool | None):
    """One FRDU; in inference the old state goes back to ``pool`` (nothing reads it after)."""
    o, new_h = unit(o, h, pool)
    if pool is not None:
        pool.give(h)
    return o, new_h


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the last two axes at the bottom/right to a multiple, replicating the edge."""
    pad_h = -x.shape[-2] % multiple
    pad_w = -x.shape[-1] % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
