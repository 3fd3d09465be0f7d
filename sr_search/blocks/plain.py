"""`plain`: 3x3 conv + activation. The deployed form of every rep family, SRVGG's body and the NTIRE23 RTSRN
baseline body (Conde et al., NTIRE 2023 Real-Time 4K SR challenge report)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from . import BlockFamily, register
from ._layers import conv_act

if TYPE_CHECKING:
    from ..arch import ArchSpec


@register
class Plain(BlockFamily):
    name = "plain"
    paper = "VGG-style SR body (SRVGGNetCompact; NTIRE23 RTSRN baseline)"
    deploys_as = "plain"
    vgg_style = True

    def block(self, spec: ArchSpec) -> nn.Module:
        return conv_act(spec.channels, spec.channels, 3, spec.activation)
