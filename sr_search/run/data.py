"""Training and validation images, MATLAB-style bicubic degradation and in-memory patch sampling.

Sources (`DataSpec.train`, the values of `DataSpec.val`): a folder of HR images (png/jpg/jpeg/bmp, searched
recursively: DIV2K's `DIV2K_train_HR/`, Set5/Set14 `GTmod12/`...) or `builtin:`. LR images are never read from disk:
HR is mod-cropped to the scale and downscaled with `imresize` (MATLAB bicubic, a = -0.5, antialiased), then
quantised to 8 bits as the LR PNGs of DIV2K/Set5 are (BasicSR `generate_bicubic_img.m`).

`builtin:` is a tiny set of real colour photos bundled inside the scikit-image wheel (no download), read straight
from the package folder so `pooch` is never involved. The split has no scene on both sides; the stereo pair
motorcycle_left/right is one scene and stays in train:

- train: coffee, rocket, motorcycle (left + right), immunohistochemistry (`ihc.png`)
- val:   astronaut, chelsea (the cat; `skimage.data.cat()` is the same photo)

Left out on purpose: `retina` and `hubble_deep_field` (mostly black background, so most patches carry no texture),
and the grey-level, binary or synthetic images (camera, moon, coins, horse, logo, color, chessboard...).

Colours: `colors=3` trains on RGB in [0, 1]; `colors=1` on the MATLAB Y channel (16..235) divided by 255, computed
from the 8-bit RGB images, as ECBSR does. Training images live in memory on the training device (the GPU when
training there), so the loader never starves a tiny model: RGB as uint8 (4x smaller than float, converted per
batch), Y as float32 (1.33x the uint8 RGB, and no per-batch conversion).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SrSearchError
from ..model.blocks import family_of
from ..model.spec import ArchSpec
from ..study.images import (
    BUILTIN_TRAIN,
    BUILTIN_VAL,
    IMAGE_SUFFIXES,
    builtin_folder,
    list_images,
    source_files,
)
from ..study.settings import BUILTIN, DataSpec

__all__ = ["BUILTIN", "BUILTIN_TRAIN", "BUILTIN_VAL", "IMAGE_SUFFIXES", "DataSpec", "TrainData", "ValImage",
           "builtin_folder", "check_patch", "check_val", "degrade", "imresize", "list_images", "load_train",
           "load_val", "mod_crop", "read_image", "to_colors"]
#: MATLAB rgb2ycbcr Y row for RGB in [0, 1]; Y lands in [16, 235] (BT.601 studio swing)
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0




# --- MATLAB bicubic --------------------------------------------------------------------------------


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def output_size(in_len: int, scale: float) -> int:
    """MATLAB's ceil(in * scale), tolerant of 1/3 not being exact in binary."""
    return max(1, math.ceil(in_len * scale - 1e-9))


@functools.lru_cache(maxsize=64)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """The (out_len, in_len) float64 matrix of one 1-D MATLAB bicubic resize, symmetric padding folded in."""
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output centre
    shrink = antialias and scale < 1
    width = 4.0 / scale if shrink else 4.0
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if shrink else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    idx = idx.long() - 1
    # MATLAB 'symmetric' padding: ... x1 x0 | x0 x1 ... x(n-1) | x(n-1) x(n-2) ..., for any distance
    period = 2 * in_len
    m = idx % period
    idx = torch.where(m < in_len, m, period - 1 - m)
    # A dense matrix turns each pass into one matmul (BLAS): much faster than gathering taps.
    return torch.zeros(out_len, in_len, dtype=torch.float64).scatter_add_(1, idx, weights)


def _resize_dim(x: torch.Tensor, dim: int, scale: float, antialias: bool) -> torch.Tensor:
    in_len = x.shape[dim]
    matrix = _resize_matrix(in_len, output_size(in_len, scale), float(scale), antialias)
    matrix = matrix.to(device=x.device, dtype=x.dtype)
    if dim == x.ndim - 2:
        return matrix @ x
    return x @ matrix.T


def imresize(x: torch.Tensor | np.ndarray, scale: float, antialias: bool = True) -> Any:
    """MATLAB `imresize(x, scale, 'bicubic')` on the last two axes (H, W) of a float array.

    Output size ceil(in * scale); a = -0.5 cubic kernel, stretched (antialiased) when downscaling, symmetric
    padding; H is resized first, then W. Not rounded or clipped (MATLAB does that only for uint8 input).
    Torch in -> torch out, numpy in -> numpy out; the dtype is kept (use float64 for reference values).
    """
    if scale <= 0:
        raise SrSearchError(f"imresize scale must be > 0; got {scale!r}")
    as_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(x) if as_numpy else x
    if not t.is_floating_point():
        raise SrSearchError(f"imresize needs a float array (values in [0, 1]); got dtype {t.dtype}")
    if t.ndim < 2:
        raise SrSearchError(f"imresize needs at least 2 dimensions (H, W); got shape {tuple(t.shape)}")
    out = _resize_dim(_resize_dim(t, t.ndim - 2, scale, antialias), t.ndim - 1, scale, antialias)
    return out.numpy() if as_numpy else out


# --- colours ---------------------------------------------------------------------------------------


def to_colors(rgb: torch.Tensor, colors: int, peak: float = 1.0) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, peak] (uint8 with peak=255 is fine) -> float32 model input space:
    RGB in [0, 1], or Y (16..235) / 255."""
    if colors == 3:
        return rgb.float().div_(peak) if peak != 1.0 or not rgb.is_floating_point() else rgb
    # three scaled adds beat sum/einsum/1x1-conv on CPU by 3-4x for batch-sized tensors
    r, g, b = (rgb.select(-3, i).float() for i in range(3))
    k = 255.0 * peak
    y = (r * (Y_WEIGHTS[0] / k)).add_(g, alpha=Y_WEIGHTS[1] / k).add_(b, alpha=Y_WEIGHTS[2] / k)
    return y.add_(Y_OFFSET / 255.0).unsqueeze(-3)


def _check_colors(colors: int) -> None:
    if colors not in (1, 3):
        raise SrSearchError(f"colors must be 1 (Y) or 3 (RGB); got {colors!r}")


def _check_scale(scale: int) -> None:
    if scale not in (2, 3, 4):
        raise SrSearchError(f"scale must be 2, 3 or 4; got {scale!r}")


# --- reading images --------------------------------------------------------------------------------


def read_image(path: Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array; an unreadable file names its path."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                # 16-bit grey (PIL "I;16"/"I") spans 0..65535; float ("F") images are taken as [0, 1]
                arr = np.asarray(im, dtype=np.float64) * (255.0 if im.mode == "F" else 255.0 / 65535.0)
                arr = np.clip(np.round(arr), 0, 255)
                arr = np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for broken files
        raise SrSearchError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise SrSearchError(f"cannot read image {path}: unexpected shape {arr.shape}")
    return arr


def mod_crop(img: np.ndarray, multiple: int) -> np.ndarray:
    """Crop the bottom/right so H and W are multiples of `multiple` (HWC array)."""
    h, w = img.shape[0] - img.shape[0] % multiple, img.shape[1] - img.shape[1] % multiple
    return img[:h, :w]


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """8-bit LR of a mod-cropped (H, W, 3) uint8 HR: MATLAB bicubic 1/scale, rounded and clipped to uint8."""
    t = torch.from_numpy(np.array(hr, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
    lr = imresize(t, 1.0 / scale)
    return lr.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _pair(path: Path, scale: int, max_size: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    hr = read_image(path)
    if max_size is not None:
        h, w = hr.shape[:2]
        top, left = max(0, (h - max_size) // 2), max(0, (w - max_size) // 2)
        hr = hr[top:top + max_size, left:left + max_size]
    hr = mod_crop(hr, scale)
    if hr.shape[0] < scale or hr.shape[1] < scale:
        raise SrSearchError(f"{what} image {path} is {hr.shape[1]}x{hr.shape[0]} px, smaller than scale x{scale}")
    return hr, degrade(hr, scale)


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


@functools.lru_cache(maxsize=2)
def _load_train_pairs(
    source: str, scale: int, max_images: int | None
) -> tuple[tuple[str, torch.Tensor, torch.Tensor], ...]:
    """(name, HR, LR) uint8 CHW, cached per process: a search trains many candidates on the same data."""
    files = source_files(source, "train", "data.train folder")
    if max_images is not None:
        files = files[:max_images]
    out = []
    for name, path in files:
        hr, lr = _pair(path, scale, None, "training")
        out.append((name, _chw(hr), _chw(lr)))
    return tuple(out)


# --- training data ---------------------------------------------------------------------------------


@dataclass
class TrainData:
    """HR/LR pairs held in memory on `device`; `batch()` cuts augmented patches.

    Stored as (3, H, W) uint8 RGB for colors=3, as (1, H, W) float32 Y/255 for colors=1.
    """

    names: list[str]
    hr: list[torch.Tensor]
    lr: list[torch.Tensor]  # H / scale, W / scale
    scale: int
    colors: int
    device: torch.device

    def __post_init__(self) -> None:
        self._sizes = [(t.shape[1], t.shape[2]) for t in self.lr]
        self._min_side = min(min(s) for s in self._sizes)

    def max_lr_patch(self) -> int:
        return self._min_side

    def check_fits(self, lr_patch: int) -> None:
        """Every training image must hold one LR patch; otherwise name the smallest offender."""
        if lr_patch > self._min_side:
            i = min(range(len(self.lr)), key=lambda k: min(self._sizes[k]))
            h, w = self._sizes[i]
            raise SrSearchError(
                f"train lr_patch={lr_patch} does not fit training image {self.names[i]!r} "
                f"(LR {w}x{h} px at x{self.scale}); use lr_patch <= {self._min_side} or drop that image"
            )

    def batch(
        self, batch_size: int, lr_patch: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random (lr, hr) float patches: image uniformly (BasicSR: one crop per drawn image), random position,
        random flips and 90-degree rotation. Deterministic given `generator` (a CPU generator)."""
        self.check_fits(lr_patch)
        s, p = self.scale, lr_patch
        draws = torch.rand((batch_size, 6), generator=generator, dtype=torch.float64).tolist()
        lrs, hrs = [], []
        for k, top_u, left_u, hflip, vflip, transpose in draws:
            i = int(k * len(self.lr))
            h, w = self._sizes[i]
            top, left = int(top_u * (h - p + 1)), int(left_u * (w - p + 1))
            lr = self.lr[i][:, top:top + p, left:left + p]
            hr = self.hr[i][:, top * s:(top + p) * s, left * s:(left + p) * s]
            # per-sample flips of small views are cheaper than batched torch.where; transpose is a view
            dims = (-1,) * (hflip < 0.5) + (-2,) * (vflip < 0.5)
            if dims:
                lr, hr = lr.flip(dims), hr.flip(dims)
            if transpose < 0.5:
                lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
            lrs.append(lr)
            hrs.append(hr)
        return _as_float(torch.stack(lrs)), _as_float(torch.stack(hrs))


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _stored(rgb: torch.Tensor, colors: int, device: torch.device) -> torch.Tensor:
    """How a training image is kept: uint8 RGB, or float32 Y (converted on the device, once)."""
    rgb = rgb.to(device)
    return rgb if colors == 3 else to_colors(rgb, 1, 255.0)


def load_train(spec: DataSpec, scale: int, colors: int, device: torch.device | str = "cpu") -> TrainData:
    """Read, mod-crop and degrade the training images once (cached per process); keep them on `device`."""
    _check_scale(scale)
    _check_colors(colors)
    pairs = _load_train_pairs(spec.train, scale, spec.train_max_images)
    dev = torch.device(device)
    return TrainData(
        names=[n for n, _, _ in pairs],
        hr=[_stored(h, colors, dev) for _, h, _ in pairs],
        lr=[_stored(lr, colors, dev) for _, _, lr in pairs],
        scale=scale,
        colors=colors,
        device=dev,
    )


def check_patch(spec: ArchSpec, lr_patch: int) -> None:
    """An LR training patch must divide by the spec's unshuffle and, after unshuffling, reach the block's
    minimum tile (15 px for the ESA blocks: RLFB, ESDB)."""
    u = spec.unshuffle
    if lr_patch % u:
        raise SrSearchError(
            f"train lr_patch={lr_patch} is not divisible by the spec's unshuffle={u}; use a multiple of {u}"
        )
    minimum = family_of(spec.block).min_lr_size
    if lr_patch // u < minimum:
        raise SrSearchError(
            f"train lr_patch={lr_patch} gives {lr_patch // u} px LR tiles after unshuffle {u}, below the "
            f"minimum {minimum} px of block {spec.block!r}; use lr_patch >= {minimum * u}"
        )


# --- validation data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValImage:
    """One validation pair: HR (3, H, W) uint8 RGB, LR (colors, H/s, W/s) float in the model's input space."""

    name: str
    hr: torch.Tensor
    lr: torch.Tensor


def load_val(spec: DataSpec, scale: int, colors: int) -> dict[str, list[ValImage]]:
    """Each validation set: HR centre-cropped to `val_max_size`, mod-cropped, and its 8-bit bicubic LR."""
    _check_scale(scale)
    _check_colors(colors)
    sets: dict[str, list[ValImage]] = {}
    for set_name, source in spec.val.items():
        images = []
        for name, path in source_files(source, "val", f"data.val.{set_name} folder"):
            hr, lr = _pair(path, scale, spec.val_max_size, f"validation set {set_name!r}")
            lr_t = to_colors(_chw(lr), colors, 255.0)
            images.append(ValImage(name=name, hr=_chw(hr), lr=lr_t))
        sets[set_name] = images
    return sets


def check_val(spec: ArchSpec, val_sets: dict[str, list[ValImage]]) -> None:
    """Every validation LR image, cropped to the spec's unshuffle multiple, must reach the block's minimum tile;
    a too-small image is an error naming it (never skipped silently)."""
    u = spec.unshuffle
    minimum = family_of(spec.block).min_lr_size
    for set_name, images in val_sets.items():
        for img in images:
            h, w = img.lr.shape[-2:]
            side = min(h // u, w // u)
            if side < max(minimum, 1):
                raise SrSearchError(
                    f"validation image {img.name!r} of set {set_name!r} is too small: LR {w}x{h} px at "
                    f"x{img.hr.shape[-1] // max(w, 1)} gives {side} px tiles after unshuffle {u}; block "
                    f"{spec.block!r} needs at least {max(minimum, 1)} px (raise data.val_max_size or drop the image)"
                )
