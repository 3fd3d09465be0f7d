"""`span`: SPAN, the Swift Parameter-free Attention Network (Wan et al., NTIRE 2024 efficient-SR winner; official
code hongyuanyu/SPAN `basicsr/archs/span_arch.py`). Written only against the public block API, as a family of
yours would be.

- Conv3XC (training form): a 1x1 skip conv plus a 1x1 (C_in -> gain*C_in) -> 3x3 (-> gain*C_out) -> 1x1 (-> C_out)
  expansion, all with bias. The input is zero-padded *before* the first 1x1 and the 3x3 runs unpadded, so the
  padded border carries the first 1x1's bias into the 3x3 exactly as the merged conv's bias assumes: the merge is
  exact at borders too. Deployed: one 3x3 conv.
- SPAB: three Conv3XC with SiLU between them; parameter-free attention `sigmoid(out3) - 0.5`; output
  `(out3 + x) * attention`. It also hands out its first conv's output (`out1`).
- Trunk: head Conv3XC (the family's stem), `depth` SPABs (6 in SPAN), a Conv3XC after the last one, and a 1x1 conv
  fusing the concatenation of [head features, that conv's output, block 1's output, the last block's `out1`].
  The tail is a 3x3 conv to colors * scale^2 and a pixel shuffle; no global skip.

Left out on purpose: SPAN's input normalisation ((x - DIV2K mean) * 255, a buffer with no parameters), since
sr-search trains from scratch on [0, 1] inputs, and the official module's `eval_conv` kept beside the training
branches (deployed counts count the deployed network only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...errors import FieldProblem
from . import fuse
from .api import BlockFamily, FamilyFields, Spec, register
from .layers import make_act


class Conv3XC(nn.Module):
    """SPAN's re-parameterisable 3x3 conv (training form); `to_deploy()` is the one 3x3 conv it equals."""

    def __init__(self, cin: int, cout: int, gain: int = 2) -> None:
        super().__init__()
        self.sk = nn.Conv2d(cin, cout, 1)
        self.expand = nn.Conv2d(cin, cin * gain, 1)
        self.conv = nn.Conv2d(cin * gain, cout * gain, 3, padding=0)
        self.squeeze = nn.Conv2d(cout * gain, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squeeze(self.conv(self.expand(F.pad(x, (1, 1, 1, 1))))) + self.sk(x)

    def to_deploy(self) -> nn.Module:
        chain = fuse.after_1x1(fuse.conv_kernel(self.expand), fuse.conv_kernel(self.conv))
        chain = fuse.then_1x1(chain, fuse.conv_kernel(self.squeeze))
        return fuse.to_conv(fuse.add(chain, fuse.pad_to(fuse.conv_kernel(self.sk), 3)))


class SPAB(nn.Module):
    """Swift parameter-free attention block: returns (output, first conv's output)."""

    def __init__(self, channels: int, gain: int, act: str) -> None:
        super().__init__()
        self.c1 = Conv3XC(channels, channels, gain)
        self.c2 = Conv3XC(channels, channels, gain)
        self.c3 = Conv3XC(channels, channels, gain)
        self.act1 = make_act(act, channels)
        self.act2 = make_act(act, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = self.c1(x)
        out3 = self.c3(self.act2(self.c2(self.act1(out1))))
        attention = torch.sigmoid(out3) - 0.5
        return (out3 + x) * attention, out1


class SpanTrunk(nn.Module):
    """SPAN's trunk: SPABs, a Conv3XC, and a 1x1 fusion of four feature maps (head, last conv, block 1, last out1)."""

    def __init__(self, channels: int, depth: int, gain: int, act: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SPAB(channels, gain, act) for _ in range(depth))
        self.conv = Conv3XC(channels, channels, gain)
        self.fuse = nn.Conv2d(4 * channels, channels, 1)

    def forward(self, head: torch.Tensor) -> torch.Tensor:
        out, first = head, None
        for block in self.blocks:
            out, out1 = block(out)
            first = out if first is None else first
        return self.fuse(torch.cat([head, self.conv(out), first, out1], dim=1))


class SpanFields(FamilyFields):
    #: Conv3XC's expansion (2 in SPAN); training-time structure only, it deploys to the same 3x3 conv
    gain: int = Field(2, ge=1, le=8)


@register
class Span(BlockFamily):
    name = "span"
    paper = "SPAN (Wan et al., NTIRE 2024 efficient SR)"
    Fields = SpanFields
    examples = {"gain": (1, 2)}

    def validate(self, spec: Spec) -> None:
        if spec.depth < 1:
            raise FieldProblem("depth", "span fuses the first and the last block's features: depth must be >= 1")
        if spec.fusion != "none":
            raise FieldProblem("fusion", "span has its own fusion (a four-way concat)", ("none",))

    def block(self, spec: Spec) -> nn.Module:
        return SPAB(spec.channels, spec.gain, spec.activation)

    def stem(self, spec: Spec, cin: int, cout: int, act: bool) -> nn.Module:
        conv = Conv3XC(cin, cout, spec.gain)
        return nn.Sequential(conv, make_act(spec.activation, cout)) if act else conv

    def body(self, spec: Spec) -> nn.Module:
        return SpanTrunk(spec.channels, spec.depth, spec.gain, spec.activation)
