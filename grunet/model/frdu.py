"""Full-Resolution Dense Unit: a dense block at scale 1/2^s that writes into the GRU state h."""

from __future__ import annotations

import torch
from torch import nn

from grunet.model.convgru import ConvGRU
from grunet.model.layers import (
    BufferPool,
    ConvNormAct,
    max_pool,
    norm_layer,
    upsample_bilinear,
)


class DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-1×1 bottleneck, BN-ReLU-3×3; returns only the new features."""

    def __init__(self, cin: int, growth: int, bottleneck: int, norm: str):
        super().__init__()
        mid = bottleneck * growth
        self.body = nn.Sequential(
            norm_layer(norm, cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, mid, 1, bias=False),
            norm_layer(norm, mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DenseBlock(nn.Module):
    """Each layer sees the concatenation of the block input and all earlier layers' outputs."""

    def __init__(self, cin: int, layers: int, growth: int, bottleneck: int, norm: str):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(cin + i * growth, growth, bottleneck, norm) for i in range(layers)
        )
        self.out_channels = cin + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:  # (the first layer reads x itself: a cat of one is a copy)
            features.append(layer(torch.cat(features, dim=1) if len(features) > 1 else x))
        return torch.cat(features, dim=1)


class FRDU(nn.Module):
    """One unit at scale 1/``factor``: (o, h) → (o', h').

    h is reduced to o's scale by max pooling (the paper found it more stable than bilinear
    interpolation). The GRU's input terms are computed from o' at low resolution (1×1 projection
    to c_h, then the 3×3 W_x convs) and only then upsampled bilinearly to full resolution.
    """

    def __init__(self, cin: int, width: int, factor: int, cfg):
        super().__init__()
        self.factor = factor
        self.fuse = ConvNormAct(cin + cfg.hidden, width, 1, cfg.norm, cfg.negative_slope)
        self.dense = DenseBlock(width, cfg.dense_layers, cfg.growth, cfg.bottleneck, cfg.norm)
        self.transition = ConvNormAct(self.dense.out_channels, width, 1, cfg.norm)
        self.to_hidden = nn.Conv2d(width, cfg.hidden, 1)  # projection to c_h, at low resolution
        self.gates_x = nn.Conv2d(cfg.hidden, 3 * cfg.hidden, 3, padding=1)  # W_xz, W_xr, W_x
        self.gru = ConvGRU(cfg.hidden, cfg.negative_slope)

    def forward(
        self, o: torch.Tensor, h: torch.Tensor, pool: BufferPool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h_low = max_pool(h, self.factor)  # (B, c_h, H/f, W/f)
        o = self.transition(self.dense(self.fuse(torch.cat([o, h_low], dim=1))))  # (B, w, H/f, W/f)
        gx = self.gates_x(self.to_hidden(o))  # (B, 3 c_h, H/f, W/f): W_xz*x, W_xr*x, W_x*x
        c_h = gx.shape[1] // 3
        gx = [  # the gates' terms together, the candidate's alone: dense at full resolution
            upsample_bilinear(g, self.factor, pool) for g in gx.split([2 * c_h, c_h], dim=1)
        ]
        return o, self.gru(gx, h, pool)  # (B, 2 c_h | c_h, H, W), h (B, c_h, H, W) -> h'
