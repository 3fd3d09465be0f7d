"""Structural reparameterization of a trained network into its inference form, and the check that both
compute the same function.

`reparameterize` deep-copies the model and replaces every module that has `to_deploy()` (Rep, ECB blocks) by
the plain conv it merges into. It never mutates its input and never looks at `model.training`: BN is always
folded with its running statistics, which is exactly what the trained model computes in eval mode (or after
Frozen BN).
"""

from __future__ import annotations

import copy

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
