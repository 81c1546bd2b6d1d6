"""GRUU-Net hyper-parameters: one dataclass, presets are named instances of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

NORMS = ("batch", "group", "instance")


@dataclass(frozen=True)
class GRUUNetConfig:
    in_channels: int = 1  # image channels fed to the network
    classes: int = 3  # background / cell interior / cell boundary
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512, 512)  # FRDU widths at 1/2 ... 1/2^S
    decoder_widths: tuple[int, ...] = (256, 128, 64, 32)  # FRDU widths at 1/2^(S-1) ... 1/2
    hidden: int = 32  # c_h: channels of the full-resolution GRU state h
    dense_layers: int = 4  # DenseNet-BC layers per FRDU
    growth: int = 32  # channels each dense layer adds
    bottleneck: int = 4  # BC bottleneck width = bottleneck * growth
    norm: str = "batch"  # "batch", "group" (8 groups or fewer) or "instance"
    stem_kernel: int = 5  # stem conv kernel at full resolution
    negative_slope: float = 0.2  # LeakyReLU slope in the stem and the GRU candidate
    extra: dict = field(default_factory=dict, compare=False)  # free-form notes, not used by code

    def __post_init__(self) -> None:
        if len(self.decoder_widths) != len(self.encoder_widths) - 1:
            raise ValueError(
                f"decoder_widths needs {len(self.encoder_widths) - 1} entries "
                f"(one per scale back to 1/2), got {len(self.decoder_widths)}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if min(self.in_channels, self.classes, self.hidden, self.growth) < 1:
            raise ValueError("in_channels, classes, hidden and growth must be >= 1")

    @property
    def scales(self) -> int:
        """Number of encoder scales S; inputs are padded to a multiple of 2^S."""
        return len(self.encoder_widths)

    @property
    def stride(self) -> int:
        return 2**self.scales

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GRUUNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        for key in ("encoder_widths", "decoder_widths"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def replace(self, **changes) -> GRUUNetConfig:
        return dataclasses.replace(self, **changes)


# The reference network of Wollmann et al. (2019): widths 64..512..32, c_h = 32.
PAPER = GRUUNetConfig()

# CPU-friendly: every FRDU and the full-resolution GRU are kept, only narrower.
SMALL = GRUUNetConfig(
    encoder_widths=(16, 32, 64, 96, 96),
    decoder_widths=(64, 32, 16, 16),
    hidden=12,
    dense_layers=2,
    growth=12,
)

PRESETS: dict[str, GRUUNetConfig] = {"paper": PAPER, "small": SMALL}


def preset(name: str, **overrides) -> GRUUNetConfig:
    """A named preset ("paper" or "small"), optionally with fields replaced."""
    try:
        base = PRESETS[name]
    except KeyError:
        choices = sorted(PRESETS)
        raise ValueError(f"unknown model preset {name!r}; choose one of {choices}") from None
    return base.replace(**overrides) if overrides else base
