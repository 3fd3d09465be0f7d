"""Parameter and MAC counts of a candidate: thop on the deployed model at the protocol's input size, MACs, not 2x
(docs/architecture.md, "Timing").

What thop 0.1.1 (`thop.profile`, the version pinned in the venv) counts, per forward call of a leaf module:

- Conv2d / ConvTranspose2d: output elements x (Cin / groups) x kh x kw. These are MACs; the **bias is not
  counted** and nothing is doubled (the convention of the NTIRE challenges' counter too).
- PReLU: 1 per input element (in eval mode, which thop switches to). ReLU, ReLU6 and LeakyReLU: 0.
- BatchNorm / LayerNorm / InstanceNorm: 2 per element, 4 when affine. Linear: in_features per output element.
- MaxPool, PixelShuffle, Dropout, ZeroPad: 0. AvgPool: 1 per output element. nn.Upsample: 1 (nearest),
  11 (bilinear) or 259 (bicubic) per output element.
- No rule at all (counted as 0): GELU, SiLU, Sigmoid, Identity, PixelUnshuffle, and every **functional** call -
  F.interpolate (the global skip and ESA's bilinear upsampling), torch.sigmoid (ESA, CCA), element-wise adds and
  multiplies (residuals, attention), mean/std (CCA), F.max_pool2d, torch.cat, F.pixel_(un)shuffle.
- thop matches module types exactly, so a subclass of a counted type (sr-search's `MeanShift(nn.Conv2d)`,
  `FreezableBN(nn.BatchNorm2d)`) would silently count 0; `count_macs` gives every subclass its base class's
  rule, which is exact for these two.

The uncounted element-wise work is small next to the convolutions. Measured on the deployed presets at a 90x160 LR
input, counting every uncounted output element as one operation: ECBSR-M4C16 0.3 %, RLFN 0.4 %, CARN-M 0.1 %,
BSRN 2.3 % (GELU and CCA/ESA arithmetic) of the thop MACs. Compare MACs only between numbers from this counter.

Shared modules: thop's hooks fire on every call, so a module applied three times (CARN-M's shared units) is
counted three times for MACs, as it computes three times, while `count_params` counts its weights once.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..errors import SrSearchError
from .deploy import reparameterize
from .network import build
from .spec import ArchSpec


class Cost(BaseModel):
    """Size of one candidate: parameters before/after reparameterisation and deployed MACs for one image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    params_train: int
    params_deploy: int
    macs_deploy: int
    #: (1, colors, h, w): the protocol's LR input for one image, the size `macs_deploy` was counted at
    input_shape: tuple[int, int, int, int]

    @property
    def gmacs(self) -> float:
        return self.macs_deploy / 1e9


def count_params(model: nn.Module) -> int:
    """All parameters, each tensor once (shared modules such as CARN-M's units count once), frozen ones included."""
    return sum(p.numel() for p in model.parameters())


def _inherited_rules(model: nn.Module) -> dict[type, Callable[..., Any]]:
    """thop rules for module types that only subclass a type thop knows (thop looks types up exactly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from thop.profile import register_hooks

    rules: dict[type, Callable[..., Any]] = {}
    for module in model.modules():
        cls = type(module)
        if cls in register_hooks or cls in rules:
            continue
        for base in cls.__mro__[1:]:
            if base in register_hooks and base is not nn.Module:
                rules[cls] = register_hooks[base]
                break
    return rules


def _profile(model: nn.Module, x: torch.Tensor) -> float:
    with warnings.catch_warnings():
        # thop 0.1.1 imports distutils and calls its own deprecated helpers (PReLU) on every forward
        warnings.simplefilter("ignore")
        import thop

        macs, _ = thop.profile(model, (x,), custom_ops=_inherited_rules(model), verbose=False)
    return float(macs)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward at `input_shape` (batch included), counted by thop on a copy.

    The copy runs on PyTorch's meta device (shapes only, no arithmetic), so counting a 4K-output network costs
    milliseconds; a model with an op that has no meta kernel is counted on the CPU instead.
    """
    if len(input_shape) != 4 or any(int(s) < 1 for s in input_shape):
        raise SrSearchError(f"count_macs: input_shape must be (batch, channels, height, width) > 0; got {input_shape}")
    try:
        meta_model = copy.deepcopy(model).to("meta")
        return int(round(_profile(meta_model, torch.empty(*input_shape, device="meta"))))
    except (NotImplementedError, RuntimeError):
        pass
    cpu_model = copy.deepcopy(model).to("cpu", torch.float32)
    with torch.no_grad():
        return int(round(_profile(cpu_model, torch.zeros(*input_shape))))


def deploy_pair(spec: ArchSpec) -> tuple[nn.Module, nn.Module]:
    """(training-time network, its reparameterised inference network) for `spec`."""
    model = build(spec)
    return model, reparameterize(model)


def cost(spec: ArchSpec, input_shape: tuple[int, int, int, int], *,
         models: tuple[nn.Module, nn.Module] | None = None) -> Cost:
    """Parameters (training-time and deployed) and deployed MACs for one image of `input_shape` (the batch is
    counted as 1: the timing protocol's LR input, `sr_search.study.protocols.lr_shape`).

    `models` reuses an already built (model, deployed) pair from `deploy_pair(spec)`.
    """
    _, c, h, w = input_shape
    model, deployed = models if models is not None else deploy_pair(spec)
    return Cost(
        params_train=count_params(model),
        params_deploy=count_params(deployed),
        macs_deploy=count_macs(deployed, (1, c, h, w)),
        input_shape=(1, c, h, w),
    )
