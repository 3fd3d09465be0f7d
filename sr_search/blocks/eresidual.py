"""`eresidual`: CARN-M's efficient residual block inside its local cascading block (Ahn, Kang, Sohn, "Fast,
Accurate, and Lightweight Super-Resolution with Cascading Residual Network", ECCV 2018).

One unit: grouped 3x3 -> act -> grouped 3x3 -> act -> 1x1, plus the input, act. A block applies three units in
a local cascade (each output concatenated with everything before it and fused by a 1x1 + act); `shared=True`
is CARN-M's weight sharing (one unit applied three times, counted once). No merge exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import SrSearchError
from . import BlockFamily, register
from ._layers import make_act

if TYPE_CHECKING:
    from ..arch import ArchSpec

UNITS_PER_BLOCK = 3


class EResidual(nn.Module):
    def __init__(self, channels: int, groups: int, act: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=groups), make_act(act, channels),
            nn.Conv2d(channels, channels, 3, padding=1, groups=groups), make_act(act, channels),
            nn.Conv2d(channels, channels, 1),
        )
        self.act = make_act(act, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


class Cascade(nn.Module):
    """CARN's cascading: x -> u1 -> fuse([x, u1]) -> u2 -> fuse([x, u1, u2]) -> ... (1x1 + act fusions)."""

    def __init__(self, units: list[nn.Module], channels: int, act: str) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d((i + 2) * channels, channels, 1), make_act(act, channels))
            for i in range(len(units))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, out = [x], x
        for unit, fuse in zip(self.units, self.fuse):
            features.append(unit(out))
            out = fuse(torch.cat(features, dim=1))
        return out


@register
class EResidualFamily(BlockFamily):
    name = "eresidual"
    paper = "CARN-M (Ahn et al., ECCV 2018)"
    fields = {"groups": 4, "shared": True}
    deploy_fields = ("groups", "shared")
    deploys_as = "eresidual"

    def validate(self, spec: ArchSpec) -> None:
        if spec.channels % spec.groups:
            divisors = [g for g in range(1, spec.channels + 1) if spec.channels % g == 0]
            raise SrSearchError(
                f"ArchSpec field 'groups': channels={spec.channels} is not divisible by groups={spec.groups}; "
                f"allowed groups for these channels: {', '.join(map(str, divisors))}"
            )

    def block(self, spec: ArchSpec) -> nn.Module:
        if spec.shared:
            unit = EResidual(spec.channels, spec.groups, spec.activation)
            units = [unit] * UNITS_PER_BLOCK
        else:
            units = [EResidual(spec.channels, spec.groups, spec.activation) for _ in range(UNITS_PER_BLOCK)]
        return Cascade(units, spec.channels, spec.activation)
