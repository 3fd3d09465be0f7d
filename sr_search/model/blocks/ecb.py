"""`ecb`: the Edge-oriented Convolution Block of ECBSR (Zhang, Zeng, Zhang, "Edge-oriented Convolution Block for
Real-time Super Resolution on Mobile Devices", ACM MM 2021).

Five parallel linear branches, summed (plus the input when `with_idt`), then the activation: a 3x3 conv; a 1x1
expand (C -> width_mult*C, 2.0 in ECBSR) then 3x3; and 1x1 convs followed by fixed Sobel-x, Sobel-y and Laplacian
masks with learnable per-channel scale and bias. Deployed: one 3x3 conv + activation. The 1x1-then-3x3 branches
see the zero-padded input, i.e. their 1x1 outputs are padded with the 1x1 bias, which keeps the merge exact at
the borders (ECBSR's bias padding).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from . import fuse as _fuse
from .api import BlockFamily, FamilyFields, Spec, register
from .layers import make_act

MASKS = {
    "sobelx": [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
    "sobely": [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]],
    "laplacian": [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
}


class EdgeBranch(nn.Module):
    """1x1 conv then a fixed edge mask applied depthwise with a learnable per-channel scale and bias."""

    def __init__(self, cin: int, cout: int, mask: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.scale = nn.Parameter(torch.randn(cout, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.randn(cout) * 1e-3)
        # Frozen, but a parameter as in ECBSR, so released parameter counts (training form) match.
        self.mask = nn.Parameter(torch.tensor(MASKS[mask]).expand(cout, 1, 3, 3).clone(), requires_grad=False)

    def forward(self, x_padded: torch.Tensor) -> torch.Tensor:
        y = self.conv(x_padded)
        return F.conv2d(y, self.scale * self.mask, self.bias, groups=y.shape[1])

    def kernel(self) -> _fuse.Kernel:
        dense = _fuse.depthwise_to_dense((self.scale * self.mask).detach())
        return _fuse.after_1x1(_fuse.conv_kernel(self.conv), (dense, self.bias.detach().clone()))


class ECB(nn.Module):
    def __init__(self, cin: int, cout: int, width_mult: float, with_idt: bool, act: str) -> None:
        super().__init__()
        mid = max(1, int(cout * width_mult))
        self.with_idt = with_idt and cin == cout
        self.conv3x3 = nn.Conv2d(cin, cout, 3, padding=0)
        self.expand = nn.Conv2d(cin, mid, 1)
        self.squeeze = nn.Conv2d(mid, cout, 3, padding=0)
        self.edges = nn.ModuleList(EdgeBranch(cin, cout, m) for m in MASKS)
        self.act = make_act(act, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp = F.pad(x, (1, 1, 1, 1))
        out = self.conv3x3(xp) + self.squeeze(self.expand(xp))
        for edge in self.edges:
            out = out + edge(xp)
        if self.with_idt:
            out = out + x
        return self.act(out)

    def to_deploy(self) -> nn.Module:
        kernels = [
            _fuse.conv_kernel(self.conv3x3),
            _fuse.after_1x1(_fuse.conv_kernel(self.expand), _fuse.conv_kernel(self.squeeze)),
            *(edge.kernel() for edge in self.edges),
        ]
        if self.with_idt:
            kernels.append(_fuse.identity_kernel(self.conv3x3.weight, self.conv3x3.in_channels))
        return nn.Sequential(_fuse.to_conv(_fuse.add(*kernels)), copy.deepcopy(self.act))


class EcbFields(FamilyFields):
    #: depth multiplier of the 1x1-then-3x3 branch (2.0 in ECBSR)
    width_mult: float = Field(2.0, gt=0, le=16)
    #: add the input (an identity branch) when in and out channels match
    with_idt: bool = False


@register
class Ecb(BlockFamily):
    name = "ecb"
    paper = "ECBSR (Zhang et al., ACM MM 2021)"
    Fields = EcbFields
    deploys_as = "plain"
    vgg_style = True
    examples = {"width_mult": (0.5, 1.0, 2.0, 3.0)}

    def block(self, spec: Spec) -> nn.Module:
        return ECB(spec.channels, spec.channels, spec.width_mult, spec.with_idt, spec.activation)

    def stem(self, spec: Spec, cin: int, cout: int, act: bool) -> nn.Module:
        # ECBSR's head is an ECB too; merged it is the same 3x3 conv as any other family's head.
        return ECB(cin, cout, spec.width_mult, spec.with_idt, spec.activation if act else "identity")

    def tail(self, spec: Spec, cin: int, cout: int) -> nn.Module:
        return ECB(cin, cout, spec.width_mult, spec.with_idt, "identity")
