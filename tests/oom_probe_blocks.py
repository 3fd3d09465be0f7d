"""A block family of a test's own, outside the package, loaded through a search space's `block_modules` (used by
tests/test_runner_edges.py): a conv + activation block that runs out of GPU memory while it trains when it is 12
channels wide, as a candidate too big for the GPU would. Evaluation, deployment and timing run normally."""

import torch
from torch import nn

from sr_search.model.blocks import BlockFamily, layers, register

TOO_BIG = 12


class OomProbe(nn.Module):
    def __init__(self, channels: int, act: str) -> None:
        super().__init__()
        self.channels = channels
        self.body = layers.conv_act(channels, channels, 3, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.channels == TOO_BIG:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (oom_probe)")
        return self.body(x)


@register
class OomProbeFamily(BlockFamily):
    name = "oom_probe"

    def block(self, spec):
        return OomProbe(spec.channels, spec.activation)
