"""Small building blocks shared by the GRUU-Net modules."""

from __future__ import annotations

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
