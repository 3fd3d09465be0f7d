"""`build(spec)`: the macro-architecture shared by every block family.

    x ─┬─ [mean shift] ─ [pixel-unshuffle r] ─ [repeat k] ─ head ─┬─ body ─ [fusion] ─ [smooth] ─(+)─ upsampler ─ [+mean] ─(+)─ y
       │                                                           └──────────── long skip ────────┘                          │
       └──────────────────────────────── global skip: interpolate(x, scale) ──────────────────────────────────────────────────┘

- head: the family's stem conv; VGG-style nets (ECBSR, RepSR, SRVGG) activate it unless a long skip adds the raw
  head features back (RLFN, BSRN, RTSRN, CARN use the raw head features).
- body: the family's trunk (`BlockFamily.body`): by default `depth` blocks, chained (`fusion: none`), concatenated
  and fused with 1x1 + act (`concat`, BSRN), or cascaded, each block fed a 1x1 + act fusion of everything before
  it (`cascade`, CARN). A family with another trunk shape (SPAN) builds its own. Only the block API is used here.
- upsampler: `pixelshuffle` is one 3x3 conv to colors*(s*r)^2 channels and a pixel-shuffle (the family's tail
  conv); `progressive` is CARN's: a grouped 3x3 conv + act + shuffle per prime factor of s*r, then a 3x3 conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SrSearchError
from .blocks import family_of
from .blocks.layers import make_act
from .spec import ArchSpec

#: DIV2K RGB mean used by CARN's MeanShift.
RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv adding `sign * RGB_MEAN` (CARN); its 12 frozen values count as parameters, as released."""

    def __init__(self, sign: float) -> None:
        super().__init__(3, 3, 1)
        self.weight.data.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.bias.data.copy_(sign * torch.tensor(RGB_MEAN))
        for p in self.parameters():
            p.requires_grad = False


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


class SRNet(nn.Module):
    """The network `build` returns; `spec` records what it was built from."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        family = family_of(spec.block)
        c, r = spec.channels, spec.unshuffle
        cin = spec.colors * r * r * spec.input_repeat
        cout = spec.colors * (spec.scale * r) ** 2

        self.sub_mean = MeanShift(-1.0) if spec.mean_shift else None
        self.add_mean = MeanShift(+1.0) if spec.mean_shift else None
        self.head = family.stem(spec, cin, c, act=family.vgg_style and not spec.long_skip)
        self.body = family.body(spec)
        self.smooth = family.stem(spec, c, c, act=False) if spec.smooth_conv else None
        if spec.upsampler == "pixelshuffle":
            self.upsample = nn.Sequential(family.tail(spec, c, cout), nn.PixelShuffle(spec.scale * r))
        else:
            groups = family.upsampler_groups(spec)
            steps = []
            for f in _prime_factors(spec.scale * r):
                steps += [nn.Conv2d(c, c * f * f, 3, padding=1, groups=groups), make_act(spec.activation, c * f * f),
                          nn.PixelShuffle(f)]
            self.upsample = nn.Sequential(*steps, nn.Conv2d(c, spec.colors, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        r = spec.unshuffle
        if r > 1 and (x.shape[-1] % r or x.shape[-2] % r):
            raise SrSearchError(
                f"input {tuple(x.shape[-2:])} is not divisible by the spec's unshuffle={r}; "
                f"crop it to a multiple of {r}"
            )
        skip = x
        if self.sub_mean is not None:
            x = self.sub_mean(x)
        if r > 1:
            x = F.pixel_unshuffle(x, r)
        if spec.input_repeat > 1:
            x = torch.cat([x] * spec.input_repeat, dim=1)
        head = self.head(x)
        out = self.body(head)
        if self.smooth is not None:
            out = self.smooth(out)
        if spec.long_skip:
            out = out + head
        out = self.upsample(out)
        if self.add_mean is not None:
            out = self.add_mean(out)
        if spec.global_skip != "none":
            out = out + _upsample(skip, spec.scale, spec.global_skip)
        return out


def _upsample(x: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)


def build(spec: ArchSpec) -> SRNet:
    """The training-time network of `spec` (deploy it with `sr_search.reparameterize`)."""
    if not isinstance(spec, ArchSpec):
        raise SrSearchError(f"build() needs an ArchSpec, got {type(spec).__name__}")
    return SRNet(spec)


def min_input_size(spec: ArchSpec) -> int:
    """Smallest LR side the network accepts: the family's minimum tile times the unshuffle factor."""
    return family_of(spec.block).min_lr_size * spec.unshuffle
