"""`build(spec)`: the macro-architecture shared by every block family.

    x ─┬─ [mean shift] ─ [pixel-unshuffle r] ─ [repeat k] ─ head ─┬─ body ─ [fusion] ─ [smooth] ─(+)─ upsampler ─ [+mean] ─(+)─ y
       │                                                           └──────────── long skip ────────┘                          │
       └──────────────────────────────── global skip: interpolate(x, scale) ──────────────────────────────────────────────────┘

- head: the family's stem conv; VGG-style nets (ECBSR, RepSR, SRVGG) activate it unless a long skip adds the raw
  head features back (RLFN, BSRN, RTSRN, CARN use the raw head features).
- fusion: `none` chains the blocks; `concat` (BSRN) concatenates every block output and fuses with 1x1 + act;
  `cascade` (CARN) feeds each block with a 1x1 + act fusion of everything before it.
- upsampler: `pixelshuffle` is one 3x3 conv to colors*(s*r)^2 channels and a pixel-shuffle (the family's tail
  conv); `progressive` is CARN's: a grouped 3x3 conv + act + shuffle per prime factor of s*r, then a 3x3 conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ArchSpec
from .blocks import family_of
from .blocks._layers import make_act
from .blocks.eresidual import Cascade
from .errors import SrSearchError

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


class ConcatFusion(nn.Module):
    """BSRN: concatenate every block's output, fuse with 1x1 + act."""

    def __init__(self, blocks: list[nn.Module], channels: int, act: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.fuse = nn.Sequential(nn.Conv2d(len(blocks) * channels, channels, 1), make_act(act, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return self.fuse(torch.cat(outs, dim=1))


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
        blocks = [family.block(spec) for _ in range(spec.depth)]
        if spec.fusion == "concat":
            self.body = ConcatFusion(blocks, c, spec.activation)
        elif spec.fusion == "cascade":
            self.body = Cascade(blocks, c, spec.activation)
        else:
            self.body = nn.Sequential(*blocks)
        self.smooth = family.stem(spec, c, c, act=False) if spec.smooth_conv else None
        if spec.upsampler == "pixelshuffle":
            self.upsample = nn.Sequential(family.tail(spec, c, cout), nn.PixelShuffle(spec.scale * r))
        else:
            groups = spec.groups or 1
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
