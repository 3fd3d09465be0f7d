"""SR quality metrics with BasicSR's conventions, the bicubic baseline and the NTIRE23 score.

BasicSR (and therefore most efficient-SR papers) measure on 8-bit images: outputs are clamped to [0, 1], scaled to
255 and rounded; `scale` pixels are cropped from every side; maths is float64. Y is MATLAB's BT.601 studio-swing
luma, 16 + 65.481 R + 128.553 G + 24.966 B for RGB in [0, 1], left unrounded. SSIM is the original
Wang et al. / MATLAB `ssim_index`: 11x11 Gaussian window (sigma 1.5) on the valid region, no downsampling.
Metric arrays are numpy (H, W, C) or (H, W) in [0, 255], as in BasicSR.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from scipy.ndimage import correlate1d
from torch import nn

from ..errors import SrSearchError
from .data import Y_OFFSET, Y_WEIGHTS, ValImage, check_val, imresize



def to_uint8(t: torch.Tensor) -> np.ndarray:
    """A (C, H, W) or (1, C, H, W) float tensor in [0, 1] -> (H, W, C) uint8, clamped and rounded (tensor2img)."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise SrSearchError(f"to_uint8 takes one image; got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3:
        raise SrSearchError(f"to_uint8 needs a (C, H, W) tensor; got shape {tuple(t.shape)}")
    out = t.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return out.permute(1, 2, 0).cpu().numpy()


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 255] -> (H, W) float64 MATLAB Y in [16, 235] (not rounded, as BasicSR)."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise SrSearchError(f"rgb_to_y needs an (H, W, 3) array; got shape {img.shape}")
    w = np.asarray(Y_WEIGHTS, dtype=np.float64) / 255.0
    return img.astype(np.float64) @ w + Y_OFFSET


def _prepare(a: Any, b: Any, crop_border: int, y_channel: bool, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise SrSearchError(f"{what}: image shapes differ, {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise SrSearchError(f"{what} needs (H, W) or (H, W, C) arrays; got shape {a.shape}")
    if crop_border < 0:
        raise SrSearchError(f"{what}: crop_border must be >= 0; got {crop_border}")
    if crop_border:
        if min(a.shape[:2]) <= 2 * crop_border:
            raise SrSearchError(f"{what}: image {a.shape[1]}x{a.shape[0]} is too small to crop {crop_border} px")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel and a.ndim == 3 and a.shape[2] == 3:
        a, b = rgb_to_y(a), rgb_to_y(b)
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    return a, b


def psnr(a: Any, b: Any, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB of two [0, 255] images (inf when equal). Y conversion applies to 3-channel input only;
    (H, W) or (H, W, 1) input is taken as already Y."""
    a, b = _prepare(a, b, crop_border, y_channel, "psnr")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with `g`, keeping only pixels whose window lies inside the image."""
    r = len(g) // 2
    out = correlate1d(correlate1d(x, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return out[r:-r, r:-r]


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(a: Any, b: Any, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM of two [0, 255] images, mean over channels (BasicSR `calculate_ssim`)."""
    a, b = _prepare(a, b, crop_border, y_channel, "ssim")
    if min(a.shape[:2]) < 11:
        raise SrSearchError(f"ssim needs at least 11x11 px after cropping; got {a.shape[1]}x{a.shape[0]}")
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


# --- evaluation on validation sets -----------------------------------------------------------------


def _crop_pair(img: ValImage, scale: int, multiple: int) -> tuple[torch.Tensor, np.ndarray]:
    """LR cropped (bottom/right) to a multiple of `multiple` (the unshuffle factor), HR to match, as HWC uint8."""
    h, w = img.lr.shape[-2:]
    h, w = h - h % multiple, w - w % multiple
    lr = img.lr[..., :h, :w]
    hr = img.hr[:, : h * scale, : w * scale].permute(1, 2, 0).numpy()
    return lr, hr


def _score(sr8: np.ndarray, hr8: np.ndarray, scale: int, colors: int) -> dict[str, float]:
    """Y (and RGB) PSNR/SSIM of one 8-bit output against its uint8 RGB ground truth."""
    hr_y = rgb_to_y(hr8)
    sr_y = sr8[..., 0] if colors == 1 else rgb_to_y(sr8)
    out = {"psnr_y": psnr(sr_y, hr_y, scale), "ssim_y": ssim(sr_y, hr_y, scale)}
    if colors == 3:
        out["psnr_rgb"] = psnr(sr8, hr8, scale)
    return out


def _aggregate(per_set: dict[str, list[dict[str, float]]], prefix: str = "") -> dict[str, float]:
    """`<m>_<set>` = mean over the set's images; `<m>` = mean of the per-set means."""
    out: dict[str, float] = {}
    keys = next(iter(next(iter(per_set.values())))).keys()
    for key in keys:
        set_means = {name: float(np.mean([r[key] for r in rows])) for name, rows in per_set.items()}
        out[f"{prefix}{key}"] = float(np.mean(list(set_means.values())))
        for name, value in set_means.items():
            out[f"{prefix}{key}_{name}"] = value
    return out


def _check_sets(val_sets: dict[str, list[ValImage]]) -> None:
    if not val_sets:
        raise SrSearchError("no validation sets given")
    for name, images in val_sets.items():
        if not images:
            raise SrSearchError(f"validation set {name!r} has no images")


def evaluate(
    model: nn.Module,
    val_sets: dict[str, list[ValImage]],
    scale: int,
    colors: int,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """PSNR/SSIM of `model` on every validation set, in eval mode under no_grad (training mode is restored).

    Returns `psnr_y`, `ssim_y` (mean over sets of per-set means), `psnr_y_<set>`, `ssim_y_<set>`, and for RGB
    models `psnr_rgb`, `psnr_rgb_<set>`. A Y model's output is scored directly against the Y of the RGB truth.
    Models with pixel-unshuffle get their LR cropped to a multiple of `spec.unshuffle`.
    """
    _check_sets(val_sets)
    spec = getattr(model, "spec", None)
    multiple = 1
    if spec is not None:
        if spec.scale != scale or spec.colors != colors:
            raise SrSearchError(
                f"evaluate: model is x{spec.scale} with colors={spec.colors}, asked for x{scale} colors={colors}"
            )
        check_val(spec, val_sets)
        multiple = spec.unshuffle
    first = next(model.parameters(), None)
    if device is None:
        device = first.device if first is not None else torch.device("cpu")
    # the model's dtype (float64, or fp16 weights) decides the input's; the scores are computed in float64 anyway
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            per_set = _score_sets(val_sets, scale, colors, multiple,
                                  lambda lr: model(lr.unsqueeze(0).to(device, dtype)).float()[0])
    finally:
        model.train(was_training)
    return _aggregate(per_set)


def bicubic_baseline(
    val_sets: dict[str, list[ValImage]], scale: int, colors: int, multiple: int = 1
) -> dict[str, float]:
    """The same metrics for MATLAB-bicubic upscaling of the LR: `bicubic_psnr_y`, `bicubic_psnr_y_<set>`, ...

    `multiple` crops the LR like `evaluate` does for a model with that unshuffle factor, so gains compare
    the same pixels.
    """
    _check_sets(val_sets)
    per_set = _score_sets(val_sets, scale, colors, multiple, lambda lr: imresize(lr.double(), float(scale)))
    return _aggregate(per_set, prefix="bicubic_")


def _score_sets(
    val_sets: dict[str, list[ValImage]], scale: int, colors: int, multiple: int,
    upscale: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, list[dict[str, float]]]:
    """Per set, the scores of `upscale(lr)` (a (C, H, W) LR -> (C, sH, sW)) against each HR image."""
    per_set: dict[str, list[dict[str, float]]] = {}
    for set_name, images in val_sets.items():
        rows = per_set.setdefault(set_name, [])
        for img in images:
            lr, hr8 = _crop_pair(img, scale, multiple)
            if lr.shape[-3] != colors:
                raise SrSearchError(
                    f"validation image {img.name!r} of set {set_name!r} has {lr.shape[-3]} channels; "
                    f"the model takes colors={colors} (load_val with the same colors)"
                )
            out = upscale(lr)
            expected = (colors, hr8.shape[0], hr8.shape[1])
            if tuple(out.shape) != expected:
                raise SrSearchError(
                    f"output for validation image {img.name!r} has shape {tuple(out.shape)}, "
                    f"expected {expected} (x{scale})"
                )
            rows.append(_score(to_uint8(out), hr8, scale, colors))
    return per_set


__all__ = [
    "bicubic_baseline", "evaluate", "psnr", "rgb_to_y", "ssim",
    "to_uint8",
]
