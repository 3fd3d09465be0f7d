"""Layers families share (part of the block API): activations by name, conv + activation, frozen-capable BN, and
the fusions of a trunk (BSRN's concat, CARN's cascade)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: RLFN's LeakyReLU slope; ECBSR/RepSR use per-channel PReLU (PyTorch init 0.25)
LRELU_SLOPE = 0.05


def make_act(name: str, channels: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "prelu":
        return nn.PReLU(num_parameters=channels)
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(LRELU_SLOPE, inplace=True)
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


def conv_act(cin: int, cout: int, k: int, act: str) -> nn.Sequential:
    """A `k x k` conv (same padding, bias) followed by an activation: the deployed form of every rep block."""
    conv = nn.Conv2d(cin, cout, k, padding=k // 2)
    return nn.Sequential(conv, make_act(act, cout)) if act != "identity" else nn.Sequential(conv)


class FreezableBN(nn.BatchNorm2d):
    """BatchNorm2d that can be frozen (RepSR's Frozen BN).

    Frozen: normalise with the running statistics and stop updating them, whatever `training` says,
    while gamma and beta keep receiving gradients. After freezing, the training forward equals the
    merged conv exactly, which is what makes the late training phase see the deployed function.
    """

    frozen: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training and not self.frozen
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            use_batch_stats, self.momentum if self.momentum is not None else 0.0, self.eps,
        )


def freeze_bn(model: nn.Module) -> int:
    """Freeze every `FreezableBN` in `model`; returns how many were frozen."""
    count = 0
    for module in model.modules():
        if isinstance(module, FreezableBN):
            module.frozen = True
            count += 1
    return count


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


class Cascade(nn.Module):
    """CARN's cascading: x -> u1 -> fuse([x, u1]) -> u2 -> fuse([x, u1, u2]) -> ... (1x1 + act fusions; PCARN's
    1x1s have no activation: act='identity')."""

    def __init__(self, units: list[nn.Module], channels: int, act: str) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d((i + 2) * channels, channels, 1), make_act(act, channels))
            for i in range(len(units))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, out = [x], x
        for unit, fuse in zip(self.units, self.fuse):
            features.append(unit(out))
            out = fuse(torch.cat(features, dim=1))
        return out
