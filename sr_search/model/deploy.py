"""Structural reparameterization of a trained network into its inference form, and the check that both
compute the same function.

`reparameterize` deep-copies the model and replaces every module that has `to_deploy()` (Rep, ECB blocks) by
the plain conv it merges into. It never mutates its input and never looks at `model.training`: BN is always
folded with its running statistics, which is exactly what the trained model computes in eval mode (or after
Frozen BN).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import SrSearchError


def _replace_deployable(module: nn.Module) -> None:
    for name, child in module.named_children():
        if hasattr(child, "to_deploy"):
            setattr(module, name, child.to_deploy())
        else:
            _replace_deployable(child)


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """A new inference model (eval mode, no gradients) computing what `model.eval()` computes."""
    deployed = copy.deepcopy(model)
    if hasattr(deployed, "to_deploy"):
        deployed = deployed.to_deploy()
    _replace_deployable(deployed)
    for p in deployed.parameters():
        p.requires_grad_(False)
    return deployed.eval()


def default_check_size(model: nn.Module) -> tuple[int, int]:
    """A non-square LR size the model accepts (ESA's 15 px minimum, divisible by unshuffle)."""
    spec = getattr(model, "spec", None)
    r = spec.unshuffle if spec is not None else 1
    return 17 * r, 19 * r


@torch.no_grad()
def check_equivalence(
    model: nn.Module,
    deployed: nn.Module,
    *,
    size: tuple[int, int] | None = None,
    batch: int = 2,
    seed: int = 0,
    tolerance: float | None = None,
) -> float:
    """Max abs difference between `model` in eval mode and `deployed` on random unit-scale inputs.

    Borders are included. The inputs are made on the model's device and in its dtype (a float64 model is compared
    in float64). With `tolerance`, raise `SrSearchError` when the error exceeds it. The model's train/eval mode is
    restored afterwards.
    """
    spec = getattr(model, "spec", None)
    colors = spec.colors if spec is not None else 3
    h, w = size or default_check_size(model)
    param = next(model.parameters())
    if param.device.type == "meta":
        raise SrSearchError("check_equivalence: the model is on the meta device, which has shapes but no values; "
                            "compare on a real device")
    # drawn on the CPU (a seeded generator gives the same input on every device), then placed like the model
    x = torch.rand(batch, colors, h, w, generator=torch.Generator().manual_seed(seed)).to(param.device, param.dtype)
    was_training = model.training
    model.eval()
    try:
        err = (model(x) - deployed(x)).abs().max().item()
    finally:
        model.train(was_training)
    if tolerance is not None and not err <= tolerance:
        raise SrSearchError(f"deployed model differs from the trained model: max abs error {err:.3g} > {tolerance:g}")
    return err


def receptive_radius(deployed: nn.Module) -> int:
    """How far (LR pixels) a border effect can travel inward: the sum of every conv's reach, strides ignored (an
    upper bound for chains of stride-1 convs, which is what a padding error propagates through)."""
    reach = 0
    for m in deployed.modules():
        if isinstance(m, nn.Conv2d):
            reach += max(m.dilation[i] * (m.kernel_size[i] - 1) // 2 for i in (0, 1))
    return reach


@torch.no_grad()
def locate_difference(model: nn.Module, deployed: nn.Module, *, seed: int = 0) -> tuple[float, float, int]:
    """Where `deployed` differs from `model` in eval mode: (max abs error in the border band, max abs error
    inside it, the band's width in LR pixels). The band is as wide as a border effect can reach (the deployed
    network's receptive radius); the input is large enough to leave an interior, at least 8 LR pixels."""
    spec = getattr(model, "spec", None)
    r = spec.unshuffle if spec is not None else 1
    scale = spec.scale if spec is not None else 1
    band = max(1, receptive_radius(deployed))
    side = math.ceil((2 * band + 8) / r) * r
    size = (max(side, 17 * r), max(side + 2 * r, 19 * r))
    colors = spec.colors if spec is not None else 3
    param = next(model.parameters())
    x = torch.rand(1, colors, *size, generator=torch.Generator().manual_seed(seed)).to(param.device, param.dtype)
    was_training = model.training
    model.eval()
    try:
        diff = (model(x) - deployed(x)).abs().amax(dim=(0, 1))
    finally:
        model.train(was_training)
    hr_band = band * scale
    inside = diff[hr_band:-hr_band, hr_band:-hr_band]
    interior = inside.max().item() if inside.numel() else 0.0
    mask = torch.ones_like(diff, dtype=torch.bool)
    mask[hr_band:-hr_band, hr_band:-hr_band] = False
    return diff[mask].max().item(), interior, band


def describe_difference(border: float, interior: float, band: int, tolerance: float) -> str:
    """Where the error lies, in words that point at the bug."""
    where = f"border band (outer {band} LR px) {border:.3g}, interior {interior:.3g}"
    if border > tolerance and not interior > tolerance:
        return (f"{where}: only the borders differ - a padding problem (a 1x1 conv before a 3x3 conv needs its "
                f"output padded with its bias, not zeros: fuse.pad_with, or zero-pad the input before the 1x1)")
    if interior > tolerance:
        return f"{where}: the interior differs too - the fused weights are wrong, not only the padding"
    return where


@torch.no_grad()
def check_untrained(model: nn.Module, *, tolerance: float, seed: int = 0) -> tuple[float, str | None]:
    """Deploy `model` as it is (untrained, with whatever BN statistics it holds) and compare: (max abs error,
    None) when it deploys exactly, else (error, a message saying where it differs). `model` is not changed.

    The tolerance scales with the output (an untrained deep net with random BN statistics can output values of
    50, where float32 rounding alone reaches 1e-4): the error must stay within `tolerance * max(1, max |output|)`.
    """
    deployed = reparameterize(model)
    spec = getattr(model, "spec", None)
    h, w = default_check_size(model)
    param = next(model.parameters())
    x = torch.rand(2, spec.colors if spec is not None else 3, h, w,  # drawn on the CPU: one input on every device
                   generator=torch.Generator().manual_seed(seed)).to(param.device, param.dtype)
    was_training = model.training
    model.eval()
    try:
        out = model(x)
        err = (out - deployed(x)).abs().max().item()
    finally:
        model.train(was_training)
    allowed = tolerance * max(1.0, out.abs().max().item())
    if err <= allowed:
        return err, None
    border, interior, band = locate_difference(model, deployed, seed=seed)
    return err, (f"deployed model differs from the trained model: max abs error {err:.3g} > {allowed:.3g}; "
                 + describe_difference(border, interior, band, allowed))
