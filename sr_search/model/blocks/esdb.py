"""`esdb`: the Efficient Separable Distillation Block of BSRN (Li et al., "Blueprint Separable Residual Network
for Efficient Image Super-Resolution", CVPRW 2022).

Feature distillation with blueprint-separable convs (BSConvU: 1x1 without bias, then depthwise kxk), followed by
ESA (BSConv version, f = C/4 by default) and contrast-aware channel attention (CCA), plus the input. The
family's head and smooth convs are BSConvU as in BSRN. No merge exists; deployment keeps the topology.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field
from torch import nn

from ...errors import FieldProblem
from .api import BlockFamily, FamilyFields, Spec, register
from .layers import make_act
from .rlfb import ESA, ESA_MIN_SIZE


class BSConvU(nn.Module):
    """Blueprint-separable conv, unconstrained: pointwise (no bias) then depthwise k x k (bias)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.dw = nn.Conv2d(cout, cout, k, stride=stride, padding=padding, groups=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


class CCA(nn.Module):
    """Contrast-aware channel attention: (std + mean) per channel -> 1x1 -> ReLU -> 1x1 -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        mid = max(1, channels // reduction)
        self.down = nn.Conv2d(channels, mid, 1)
        self.up = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * torch.sigmoid(self.up(torch.relu(self.down(std + mean))))


class ESDB(nn.Module):
    def __init__(self, channels: int, esa_channels: int, cca: bool, act: str) -> None:
        super().__init__()
        dc = channels // 2
        self.distill = nn.ModuleList(nn.Conv2d(channels, dc, 1) for _ in range(3))
        self.refine = nn.ModuleList(BSConvU(channels, channels) for _ in range(3))
        self.c4 = BSConvU(channels, dc)
        self.c5 = nn.Conv2d(4 * dc, channels, 1)
        # one activation per site, so a parametric activation (PReLU) gets its own weights at each
        self.distill_act = nn.ModuleList(make_act(act, dc) for _ in range(4))
        self.refine_act = nn.ModuleList(make_act(act, channels) for _ in range(3))
        self.esa = ESA(channels, esa_channels, BSConvU, act=act)
        self.cca = CCA(channels) if cca else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distilled, r = [], x
        for d, refine, d_act, r_act in zip(self.distill, self.refine, self.distill_act, self.refine_act):
            distilled.append(d_act(d(r)))
            r = r_act(refine(r) + r)
        distilled.append(self.distill_act[3](self.c4(r)))
        out = self.c5(torch.cat(distilled, dim=1))
        return self.cca(self.esa(out)) + x


class EsdbFields(FamilyFields):
    #: ESA's inner width; default channels / 4 (BSRN)
    esa_channels: int | None = Field(None, ge=1, le=1024)
    #: contrast-aware channel attention after ESA
    cca: bool = True


@register
class Esdb(BlockFamily):
    name = "esdb"
    paper = "BSRN (Li et al., CVPRW 2022)"
    Fields = EsdbFields
    deploy_fields = ("esa_channels", "cca")
    min_lr_size = ESA_MIN_SIZE
    examples = {"esa_channels": (4, 8, 16)}

    def defaults(self, common: Mapping[str, Any]) -> dict[str, Any]:
        channels = common.get("channels")
        return {"esa_channels": max(1, channels // 4)} if isinstance(channels, int) else {}

    def validate(self, spec: Spec) -> None:
        if spec.channels % 2:
            raise FieldProblem("channels", f"esdb distils half the channels, so channels must be even; got "
                                           f"{spec.channels}")

    def block(self, spec: Spec) -> nn.Module:
        return ESDB(spec.channels, spec.esa_channels, spec.cca, spec.activation)

    def stem(self, spec: Spec, cin: int, cout: int, act: bool) -> nn.Module:
        conv = BSConvU(cin, cout)
        return nn.Sequential(conv, make_act(spec.activation, cout)) if act else conv
