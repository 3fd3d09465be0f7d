"""`rlfb`: the Residual Local Feature Block of RLFN (Kong et al., "Residual Local Feature Network for
Efficient Super-Resolution", CVPRW 2022; NTIRE22 ESR runtime winner).

Three 3x3 conv + activation (LeakyReLU 0.05 in RLFN), a local residual, a 1x1 conv and RLFN's trimmed ESA.
No merge exists; deployment keeps the topology.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .api import BlockFamily, FamilyFields, Spec, register
from .layers import make_act

#: After the stride-2 3x3 conv the 7x7/3 max-pool needs >= 7 px, so LR tiles need >= 15 px.
ESA_MIN_SIZE = 15


class ESA(nn.Module):
    """Enhanced Spatial Attention (RFDN), as trimmed by RLFN or extended with BSConv by BSRN.

    `conv3x3(cin, cout, stride, padding)` builds the 3x3 convs: plain convs for RLFN, BSConvU for BSRN, which also
    adds `conv_max` and `conv3_` with GELU in between (`bsrn=True`).
    """

    def __init__(self, channels: int, f: int, conv3x3: Callable[..., nn.Module], act: str | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = conv3x3(f, f, stride=2, padding=0)
        self.bsrn = act is not None
        if self.bsrn:
            self.conv_max = conv3x3(f, f, stride=1, padding=1)
            self.conv3_ = conv3x3(f, f, stride=1, padding=1)
            self.act_max = make_act(act, f)
            self.act3 = make_act(act, f)
        self.conv3 = conv3x3(f, f, stride=1, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        v = F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)
        if self.bsrn:
            v = self.conv3_(self.act3(self.conv3(self.act_max(self.conv_max(v)))))
        else:
            v = self.conv3(v)
        v = F.interpolate(v, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(v + self.conv_f(c1_)))


def plain_conv3x3(cin: int, cout: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=padding)


class RLFB(nn.Module):
    def __init__(self, channels: int, esa_channels: int, act: str) -> None:
        super().__init__()
        self.c1_r = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2_r = nn.Conv2d(channels, channels, 3, padding=1)
        self.c3_r = nn.Conv2d(channels, channels, 3, padding=1)
        self.acts = nn.ModuleList(make_act(act, channels) for _ in range(3))
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(channels, esa_channels, plain_conv3x3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv, act in zip((self.c1_r, self.c2_r, self.c3_r), self.acts):
            out = act(conv(out))
        return self.esa(self.c5(out + x))


class RlfbFields(FamilyFields):
    #: ESA's inner width (fixed at 16 in RLFN)
    esa_channels: int | None = Field(16, ge=1, le=1024)


@register
class Rlfb(BlockFamily):
    name = "rlfb"
    paper = "RLFN (Kong et al., CVPRW 2022)"
    Fields = RlfbFields
    deploy_fields = ("esa_channels",)
    min_lr_size = ESA_MIN_SIZE
    examples = {"esa_channels": (4, 8, 16)}

    def block(self, spec: Spec) -> nn.Module:
        return RLFB(spec.channels, spec.esa_channels, spec.activation)
