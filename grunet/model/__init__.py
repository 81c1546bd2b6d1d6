"""GRUU-Net in pure torch; nothing here touches files."""

from grunet.model.config import PAPER, PRESETS, SMALL, GRUUNetConfig, preset
from grunet.model.convgru import ConvGRU
from grunet.model.frdu import FRDU, DenseBlock
from grunet.model.gruunet import GRUUNet

__all__ = [
    "FRDU",
    "PAPER",
    "PRESETS",
    "SMALL",
    "ConvGRU",
    "DenseBlock",
    "GRUUNet",
    "GRUUNetConfig",
    "preset",
]
