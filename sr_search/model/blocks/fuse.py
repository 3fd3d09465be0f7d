"""The algebra of structural reparameterization (RepVGG / DBB transforms), shared by the rep families.

Kernels are (Cout, Cin, k, k), biases (Cout,). Every function returns new tensors and never touches its
inputs, so merging cannot mutate the trained model. Every tensor or module made here lives on the device and in
the dtype of the tensors it is made from: a CUDA or float64 model deploys to a CUDA or float64 model.

The bias-padding rule: a 1x1 conv (bias b) followed by a k x k conv merges into one k x k conv *exactly, borders
included*, only if the k x k conv sees the 1x1 output padded with b (what the 1x1 conv would output on the zero
padding of the input), not with zeros. In the training form write `fuse.pad_with(y, b)` and an unpadded k x k conv
(or zero-pad the input before the 1x1 conv); `after_1x1` is then exact. Zero padding after the 1x1 is wrong by
about |W_kxk . b| on the outer ring of pixels only: `check_family` reports such an error as a border-band error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Kernel = tuple[torch.Tensor, torch.Tensor]


def conv_kernel(conv: nn.Conv2d) -> Kernel:
    """(weight, bias) of a conv, with a zero bias when it has none."""
    w = conv.weight.detach().clone()
    b = conv.bias.detach().clone() if conv.bias is not None else w.new_zeros(w.shape[0])
    return w, b


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """BN in eval mode as y = scale * x + shift (running statistics; valid only against those)."""
    std = torch.sqrt(bn.running_var.detach() + bn.eps)
    gamma = bn.weight.detach() if bn.affine else torch.ones_like(std)
    beta = bn.bias.detach() if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean.detach() * scale


def fold_bn(kernel: Kernel, bn: nn.BatchNorm2d) -> Kernel:
    """Transform I: conv followed by BN -> one conv. W' = W*g/s, b' = beta + g*(b - mu)/s."""
    w, b = kernel
    scale, shift = bn_affine(bn)
    return w * scale.reshape(-1, 1, 1, 1), b * scale + shift


def pad_to(kernel: Kernel, k: int) -> Kernel:
    """Transform VI: centre a smaller odd kernel in a k x k one."""
    w, b = kernel
    p = (k - w.shape[-1]) // 2
    return F.pad(w, [p, p, p, p]), b


def pad_with(x: torch.Tensor, values: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """`x` (N, C, H, W) padded by `pad` pixels on every side with a per-channel value (`values`, shape (C,)): the
    training-form half of the bias-padding rule (FMEN's RRRB, DBB's BN-and-pad). Differentiable in both."""
    n, c, h, w = x.shape
    out = values.reshape(1, c, 1, 1).to(x.dtype).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    out[:, :, pad:pad + h, pad:pad + w] = x
    return out


def avg_pool_kernel(k: int, channels: int, *, like: torch.Tensor | None = None) -> Kernel:
    """k x k average pooling (stride 1, padding k // 2, zero padding counted: `nn.AvgPool2d(k, 1, k // 2)`) as a
    k x k conv (1/k^2 on the diagonal), on `like`'s device and in its dtype (default: CPU float32)."""
    like = like if like is not None else torch.zeros((), device="cpu", dtype=torch.float32)
    w = like.new_zeros(channels, channels, k, k)
    idx = torch.arange(channels, device=like.device)
    w[idx, idx] = 1.0 / (k * k)
    return w, like.new_zeros(channels)


def identity_kernel(like: torch.Tensor, channels: int, k: int = 3) -> Kernel:
    """x as a k x k conv (1 at the centre tap of the diagonal), on `like`'s device and in its dtype."""
    w = like.new_zeros(channels, channels, k, k)
    idx = torch.arange(channels, device=like.device)
    w[idx, idx, k // 2, k // 2] = 1.0
    return w, like.new_zeros(channels)


def depthwise_to_dense(weight: torch.Tensor) -> torch.Tensor:
    """A depthwise (C, 1, k, k) kernel as the dense (C, C, k, k) kernel of the same conv, same device and dtype."""
    c = weight.shape[0]
    dense = weight.new_zeros(c, c, *weight.shape[-2:])
    idx = torch.arange(c, device=weight.device)
    dense[idx, idx] = weight[:, 0]
    return dense


def then_1x1(first: Kernel, second: Kernel) -> Kernel:
    """k x k conv followed by a 1x1 conv: exact with zero padding, no border trick needed (RepSR)."""
    w1, b1 = first
    w2, b2 = second
    m = w2[:, :, 0, 0]  # (Cout, Mid)
    return torch.einsum("om,mihw->oihw", m, w1), m @ b1 + b2


def after_1x1(first: Kernel, second: Kernel) -> Kernel:
    """Transform III: 1x1 conv followed by a k x k conv -> one k x k conv.

    Exact at borders only if the k x k conv sees the 1x1 output padded with the 1x1's bias, i.e. if the
    training forward zero-pads the *input* and runs the k x k conv unpadded (what ECB and `c1_bn_c3` do).
    """
    w1, b1 = first
    w2, b2 = second
    m = w1[:, :, 0, 0]  # (Mid, Cin)
    return torch.einsum("omhw,mi->oihw", w2, m), torch.einsum("omhw,m->o", w2, b1) + b2


def add(*kernels: Kernel) -> Kernel:
    """Transform II: parallel branches that are summed -> one conv."""
    return sum(k[0] for k in kernels), sum(k[1] for k in kernels)


def to_conv(kernel: Kernel) -> nn.Conv2d:
    """A fresh same-padded conv holding `kernel`, on the kernel's device and in its dtype (no CPU round trip:
    on the `meta` device it builds the structure without values)."""
    w, b = kernel
    conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[-1], padding=w.shape[-1] // 2, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    return conv
