"""`plain`: 3x3 conv + activation. The deployed form of every rep family, SRVGG's body and the NTIRE23 RTSRN
baseline body (Conde et al., NTIRE 2023 Real-Time 4K SR challenge report)."""

from __future__ import annotations

from torch import nn

from .api import BlockFamily, Spec, register
from .layers import conv_act


@register
class Plain(BlockFamily):
    name = "plain"
    paper = "VGG-style SR body (SRVGGNetCompact; NTIRE23 RTSRN baseline)"
    vgg_style = True

    def block(self, spec: Spec) -> nn.Module:
        return conv_act(spec.channels, spec.channels, 3, spec.activation)
