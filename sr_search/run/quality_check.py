"""What a trial measures for its quality flags (`results.quality_flags` defines them): how spread out the network's
output is compared with the ground truth. A near-constant image (a collapsed training) has a spread near 0; bicubic
upsampling and a trained network are near 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import ValImage
from .metrics import _crop_pair, rgb_to_y, to_uint8

__all__ = ["output_spread"]


def output_spread(model: nn.Module, val_sets: dict[str, list[ValImage]], scale: int, colors: int,
                  device: torch.device | str | None = None) -> float:
    """Mean over the validation images of std(output luma) / std(ground-truth luma), on the 8-bit images the
    metrics score (same crop, `scale` pixels off every side). In eval mode under no_grad; the mode is restored."""
    spec = getattr(model, "spec", None)
    multiple = spec.unshuffle if spec is not None else 1
    first = next(model.parameters(), None)
    if device is None:
        device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    ratios = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for images in val_sets.values():
                for img in images:
                    lr, hr8 = _crop_pair(img, scale, multiple)
                    sr8 = to_uint8(model(lr.unsqueeze(0).to(device, dtype)).float()[0])
                    sr_y = sr8[..., 0].astype(np.float64) if colors == 1 else rgb_to_y(sr8)
                    hr_y = rgb_to_y(hr8)
                    inner = (slice(scale, -scale), slice(scale, -scale)) if scale else (slice(None),) * 2
                    truth = float(hr_y[inner].std())
                    if truth > 0:
                        ratios.append(float(sr_y[inner].std()) / truth)
    finally:
        model.train(was_training)
    return float(np.mean(ratios)) if ratios else float("nan")
