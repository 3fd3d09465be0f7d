"""`eresidual`: CARN-M's efficient residual block inside its local cascading block (Ahn, Kang, Sohn, "Fast,
Accurate, and Lightweight Super-Resolution with Cascading Residual Network", ECCV 2018).

One unit: grouped 3x3 -> act -> grouped 3x3 -> act -> 1x1, plus the input, act. A block applies three units in
a local cascade (each output concatenated with everything before it and fused by a 1x1 + act); `shared=True`
is CARN-M's weight sharing (one unit applied three times, counted once). No merge exists.

PCARN-M (Ahn et al., "Photo-realistic image super-resolution with fast and lightweight cascading residual
network", 2019) is the same block with `cascade_act=False` (its local and global cascade 1x1 convs have no ReLU)
and a global skip from the entry conv to the upsampler (`long_skip`); the parameter shapes are CARN-M's.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from ...errors import FieldProblem
from .api import BlockFamily, FamilyFields, Spec, register
from .layers import Cascade, make_act

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


class EResidualFields(FamilyFields):
    #: groups of the 3x3 convs (and of CARN's upsampler convs); 4 in CARN-M
    groups: int = Field(4, ge=1, le=1024)
    #: CARN-M's weight sharing: one unit applied three times per block
    shared: bool = True
    #: activation after the cascade's 1x1 fusions (CARN: yes; PCARN: plain 1x1 convs)
    cascade_act: bool = True


@register
class EResidualFamily(BlockFamily):
    name = "eresidual"
    paper = "CARN-M (Ahn et al., ECCV 2018); PCARN-M with cascade_act=False and long_skip"
    Fields = EResidualFields
    deploy_fields = ("groups", "shared", "cascade_act")
    examples = {"groups": (1, 2, 4)}

    def validate(self, spec: Spec) -> None:
        if spec.channels % spec.groups:
            divisors = [g for g in range(1, spec.channels + 1) if spec.channels % g == 0]
            raise FieldProblem("groups", f"channels={spec.channels} is not divisible by groups={spec.groups}; "
                                         f"allowed groups for these channels: {', '.join(map(str, divisors))}")

    def deploy_key_fields(self, spec: Spec) -> dict[str, Any]:
        # CARN's activated cascade is the network these keys always named: the field enters the key only for
        # PCARN, so every CARN timing recorded before the field existed stays valid
        fields = super().deploy_key_fields(spec)
        if fields["cascade_act"]:
            del fields["cascade_act"]
        return fields

    def fusion_act(self, spec: Spec) -> str:
        return spec.activation if spec.cascade_act else "identity"

    def upsampler_groups(self, spec: Spec) -> int:
        return spec.groups

    def block(self, spec: Spec) -> nn.Module:
        if spec.shared:
            unit = EResidual(spec.channels, spec.groups, spec.activation)
            units = [unit] * UNITS_PER_BLOCK
        else:
            units = [EResidual(spec.channels, spec.groups, spec.activation) for _ in range(UNITS_PER_BLOCK)]
        return Cascade(units, spec.channels, self.fusion_act(spec))
