"""`rep`: the RepSR block (Wang, Dong, Shan, "RepSR: Training Efficient VGG-style Super-Resolution Networks
with Structural Re-Parameterization and Batch Normalization", ACM MM 2022).

Training form: optional residual (clean identity, identity through BN, or none) plus `branches` parallel
expand-and-squeeze paths, summed, then the activation. The branch forms are those of RepSR Table 5:

    c3_bn_c1     3x3 (C -> wC) -> BN -> 1x1 (wC -> C)            (RepSR's choice)
    c3_bn_c1_bn  3x3 -> BN -> 1x1 -> BN
    c1_bn_c3     1x1 (C -> wC) -> BN -> 3x3 (wC -> C)            (needs the input zero-padded first, see below)
    c3_bn+c1_bn  3x3 -> BN  in parallel with  1x1 -> BN          (RepVGG-style; the width multiplier is unused)

`bn=False` removes every BN. Deployed: one 3x3 conv + activation. Exactness at borders: 3x3-then-1x1 needs
nothing; 1x1-then-3x3 zero-pads the *input* and runs the 3x3 unpadded, which is the same as padding the 1x1
output with its own response to zero (DBB's bias padding), so the merged conv is exact everywhere.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...errors import FieldProblem
from . import fuse as _fuse
from .api import BlockFamily, FamilyFields, Spec, register
from .layers import FreezableBN, make_act


def _bn(channels: int, enabled: bool) -> nn.Module:
    return FreezableBN(channels) if enabled else nn.Identity()


def _fold(kernel: _fuse.Kernel, bn: nn.Module) -> _fuse.Kernel:
    return _fuse.fold_bn(kernel, bn) if isinstance(bn, nn.BatchNorm2d) else kernel


class RepBranch(nn.Module):
    """One branch of a RepSR block; `kernel()` is its exact 3x3 equivalent (eval-mode BN)."""

    def __init__(self, cin: int, cout: int, form: str, width_mult: float, bn: bool) -> None:
        super().__init__()
        self.form = form
        mid = max(1, round(cout * width_mult))
        if form in ("c3_bn_c1", "c3_bn_c1_bn"):
            self.first = nn.Conv2d(cin, mid, 3, padding=1)
            self.bn1 = _bn(mid, bn)
            self.second = nn.Conv2d(mid, cout, 1)
            self.bn2 = _bn(cout, bn and form == "c3_bn_c1_bn")
        elif form == "c1_bn_c3":
            self.first = nn.Conv2d(cin, mid, 1)
            self.bn1 = _bn(mid, bn)
            self.second = nn.Conv2d(mid, cout, 3, padding=0)
            self.bn2 = nn.Identity()
        elif form == "c3_bn+c1_bn":
            self.first = nn.Conv2d(cin, cout, 3, padding=1)
            self.bn1 = _bn(cout, bn)
            self.second = nn.Conv2d(cin, cout, 1)
            self.bn2 = _bn(cout, bn)
        else:  # guarded by ArchSpec's Literal
            raise ValueError(form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "c3_bn+c1_bn":
            return self.bn1(self.first(x)) + self.bn2(self.second(x))
        if self.form == "c1_bn_c3":
            x = F.pad(x, (1, 1, 1, 1))
        return self.bn2(self.second(self.bn1(self.first(x))))

    def kernel(self) -> _fuse.Kernel:
        first = _fold(_fuse.conv_kernel(self.first), self.bn1)
        second = _fuse.conv_kernel(self.second)
        if self.form == "c3_bn+c1_bn":
            return _fuse.add(first, _fuse.pad_to(_fold(second, self.bn2), 3))
        if self.form == "c1_bn_c3":
            return _fuse.after_1x1(first, second)
        return _fold(_fuse.then_1x1(first, second), self.bn2)


class RepBlock(nn.Module):
    def __init__(self, cin: int, cout: int, spec: Spec, act: str) -> None:
        super().__init__()
        self.residual = spec.residual if cin == cout else "none"
        self.id_bn = FreezableBN(cout) if self.residual == "bn" else None
        self.branches = nn.ModuleList(
            RepBranch(cin, cout, spec.branch_form, spec.width_mult, spec.bn) for _ in range(spec.branches)
        )
        self.act = make_act(act, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = sum(branch(x) for branch in self.branches)
        if self.residual == "clean":
            out = out + x
        elif self.id_bn is not None:
            out = out + self.id_bn(x)
        return self.act(out)

    def to_deploy(self) -> nn.Module:
        kernels = [branch.kernel() for branch in self.branches]
        if self.residual != "none":
            first = self.branches[0].first
            identity = _fuse.identity_kernel(first.weight, first.in_channels)
            kernels.append(_fold(identity, self.id_bn) if self.id_bn is not None else identity)
        return nn.Sequential(_fuse.to_conv(_fuse.add(*kernels)), copy.deepcopy(self.act))


class RepFields(FamilyFields):
    #: expand ratio of each branch (RepSR Table 6)
    width_mult: float = Field(2.0, gt=0, le=16)
    #: parallel expand-and-squeeze branches (Table 7)
    branches: int = Field(2, ge=1, le=4)
    residual: Literal["clean", "bn", "none"] = "clean"
    branch_form: Literal["c3_bn_c1", "c3_bn+c1_bn", "c3_bn_c1_bn", "c1_bn_c3"] = "c3_bn_c1"
    bn: bool = True
    #: fraction of training after which BN uses its running statistics (Frozen BN); None = never
    frozen_bn: float | None = Field(None, ge=0, le=1)


@register
class Rep(BlockFamily):
    name = "rep"
    paper = "RepSR (Wang et al., ACM MM 2022)"
    Fields = RepFields
    deploys_as = "plain"
    vgg_style = True
    examples = {"width_mult": (0.5, 1.0, 2.0, 3.0), "branches": (1, 2, 3, 4), "frozen_bn": (None, 0.5)}

    def validate(self, spec: Spec) -> None:
        if not spec.bn and spec.frozen_bn is not None:
            raise FieldProblem("frozen_bn", "needs bn=True (there is no BN to freeze)")
        if not spec.bn and spec.residual == "bn":
            raise FieldProblem("residual", "'bn' needs bn=True", ("clean", "none"))

    def block(self, spec: Spec) -> nn.Module:
        return RepBlock(spec.channels, spec.channels, spec, spec.activation)
