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
from the 8-bit RGB images, as ECBSR does.

Held once: each image is decoded once per node and degraded once per scale into the node's cache
(`sr_search.study.data_cache`: uint8 files that every trial process maps read-only, so the page cache holds one copy
however many trials run). Batches are cut on the host as uint8 (one block copy per patch) and converted where the
model trains: for a GPU they are copied from pinned memory without blocking, then augmented and converted to float
(RGB, or Y) there; for the CPU they are cut already augmented. The draws, flips and transposes are sr-search 0.2's,
so the batches are the same. `data.on_gpu` copies the images to the GPU instead (each trial its own copy).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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
from ..study.data_cache import DataCache, Entry, FileIdentity, hr_name, lr_name
from ..study.settings import BUILTIN, DataSpec

__all__ = ["BUILTIN", "BUILTIN_TRAIN", "BUILTIN_VAL", "IMAGE_SUFFIXES", "Batch", "DataSpec", "Prepared",
           "TrainData", "ValImage", "builtin_folder", "check_patch", "check_val", "data_cache", "degrade",
           "degrade_dense", "imresize", "imresize_dense", "list_images", "load_train", "load_val", "mod_crop",
           "prepare", "read_image", "to_colors"]
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
def _taps(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The taps of one 1-D MATLAB bicubic resize: 0-based input indices before padding (out_len, taps), which may
    fall outside [0, in_len), and their float64 weights (rows sum to 1)."""
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
    return idx.long() - 1, weights


def _mirror(idx: torch.Tensor, in_len: int) -> torch.Tensor:
    """MATLAB 'symmetric' padding: ... x1 x0 | x0 x1 ... x(n-1) | x(n-1) x(n-2) ..., for any distance."""
    period = 2 * in_len
    m = idx % period
    return torch.where(m < in_len, m, period - 1 - m)


@functools.lru_cache(maxsize=64)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """The dense (out_len, in_len) float64 matrix of one 1-D resize (sr-search 0.2's form; the reference)."""
    idx, weights = _taps(in_len, out_len, scale, antialias)
    return torch.zeros(out_len, in_len, dtype=torch.float64).scatter_add_(1, _mirror(idx, in_len), weights)


def _resize_dim(x: torch.Tensor, dim: int, scale: float, antialias: bool) -> torch.Tensor:
    """One banded 1-D pass: 4-18 taps per output instead of a dense matrix. Where every output has the same
    weights on a regular stride (an integer downscale: what `degrade` does), the pass is one strided convolution
    over the symmetrically padded input; otherwise a sum over the taps."""
    in_len = x.shape[dim]
    out_len = output_size(in_len, scale)
    idx, weights = _taps(in_len, out_len, float(scale), antialias)
    step = idx[1, 0] - idx[0, 0] if out_len > 1 else 1
    regular = out_len > 1 and bool((weights == weights[:1]).all()) and bool(
        (idx == idx[:1] + step * torch.arange(out_len)[:, None]).all())
    dim = dim % x.ndim
    if regular and dim == x.ndim - 1 and x.ndim >= 2:  # strided taps run along columns: resize the transpose
        return _resize_dim(x.transpose(-1, -2), x.ndim - 2, scale, antialias).transpose(-1, -2)
    if regular:
        first = int(idx[0, 0])
        span = torch.arange(first, int(idx[-1, -1]) + 1)
        padded = x.index_select(dim, _mirror(span, in_len).to(x.device))
        taps = [(t, w) for t, w in enumerate(weights[0].tolist()) if w != 0.0]
        shape = list(x.shape)
        shape[dim] = out_len
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
        lead = (slice(None),) * dim
        # in blocks of output rows whose inputs stay in cache while every tap adds into them (memory-bound otherwise)
        per_row = max(1, math.prod(shape) // out_len)
        block = max(1, (256 * 1024) // (per_row * x.element_size()))
        s = int(step)
        for j0 in range(0, out_len, block):
            j1 = min(out_len, j0 + block)
            acc = out[(*lead, slice(j0, j1))]
            for k, (t, w) in enumerate(taps):
                view = padded[(*lead, slice(s * j0 + t, s * (j1 - 1) + t + 1, s))]
                if k == 0:
                    torch.mul(view, w, out=acc)
                else:
                    acc.add_(view, alpha=w)
        return out
    mirrored = _mirror(idx, in_len).to(x.device)
    w = weights.to(device=x.device, dtype=x.dtype)
    shape = [1] * x.ndim
    shape[dim] = out_len
    out = None
    for t in range(idx.shape[1]):
        term = x.index_select(dim, mirrored[:, t]) * w[:, t].view(shape)
        out = term if out is None else out.add_(term)
    assert out is not None
    return out


def imresize(x: torch.Tensor | np.ndarray, scale: float, antialias: bool = True) -> Any:
    """MATLAB `imresize(x, scale, 'bicubic')` on the last two axes (H, W) of a float array.

    Output size ceil(in * scale); a = -0.5 cubic kernel, stretched (antialiased) when downscaling, symmetric
    padding; H is resized first, then W. Not rounded or clipped (MATLAB does that only for uint8 input).
    Torch in -> torch out, numpy in -> numpy out; the dtype is kept (use float64 for reference values).
    Banded and separable (a few taps per pixel); `imresize_dense` is sr-search 0.2's dense form, equal to 1e-6.
    """
    return _imresize(x, scale, antialias, _resize_dim)


def imresize_dense(x: torch.Tensor | np.ndarray, scale: float, antialias: bool = True) -> Any:
    """`imresize` as sr-search 0.2 computed it: each pass a product with a dense resize matrix (about 4 GFLOP per
    DIV2K image at x4). Kept as the reference the banded form is tested and benchmarked against."""
    def dense(t: torch.Tensor, dim: int, s: float, aa: bool) -> torch.Tensor:
        in_len = t.shape[dim]
        matrix = _resize_matrix(in_len, output_size(in_len, s), float(s), aa).to(device=t.device, dtype=t.dtype)
        return matrix @ t if dim == t.ndim - 2 else t @ matrix.T

    return _imresize(x, scale, antialias, dense)


def _imresize(x: torch.Tensor | np.ndarray, scale: float, antialias: bool, resize_dim: Callable[..., Any]) -> Any:
    if scale <= 0:
        raise SrSearchError(f"imresize scale must be > 0; got {scale!r}")
    as_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(x) if as_numpy else x
    if not t.is_floating_point():
        raise SrSearchError(f"imresize needs a float array (values in [0, 1]); got dtype {t.dtype}")
    if t.ndim < 2:
        raise SrSearchError(f"imresize needs at least 2 dimensions (H, W); got shape {tuple(t.shape)}")
    out = resize_dim(resize_dim(t, t.ndim - 2, scale, antialias), t.ndim - 1, scale, antialias)
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
    return _degrade(hr, scale, imresize)


def degrade_dense(hr: np.ndarray, scale: int) -> np.ndarray:
    """`degrade` with sr-search 0.2's dense resize (the reference; several times slower)."""
    return _degrade(hr, scale, imresize_dense)


def _degrade(hr: np.ndarray, scale: int, resize: Callable[..., Any]) -> np.ndarray:
    t = torch.from_numpy(np.array(hr, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
    lr = resize(t, 1.0 / scale)
    return lr.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _crop(hr: Any, scale: int, max_size: int | None, what: str, path: Path) -> Any:
    """Centre-crop to `max_size` a side (validation), then mod-crop to the scale: a view of the (H, W, 3) array
    or tensor `hr`."""
    if max_size is not None:
        h, w = hr.shape[:2]
        top, left = max(0, (h - max_size) // 2), max(0, (w - max_size) // 2)
        hr = hr[top:top + max_size, left:left + max_size]
    hr = mod_crop(hr, scale)
    if hr.shape[0] < scale or hr.shape[1] < scale:
        raise SrSearchError(f"{what} image {path} is {hr.shape[1]}x{hr.shape[0]} px, smaller than scale x{scale}")
    return hr


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


# --- preparing the images once per node ---------------------------------------------------------------------

#: decodes done by this process, per image path (the cache's journal counts them per node)
DECODES: collections.Counter[str] = collections.Counter()
_WARNED: set[str] = set()


@dataclass(frozen=True)
class Prepared:
    """One prepared image: HR (H, W, 3) uint8, mod-cropped, and its 8-bit LR (H/s, W/s, 3); read-only arrays,
    memory-mapped from the node's cache (or held in memory when the cache cannot be written)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    hr_t: torch.Tensor = field(repr=False)  # the same memory as torch tensors
    lr_t: torch.Tensor = field(repr=False)


def data_cache(spec: DataSpec) -> DataCache:
    """The cache `spec` names (`data.cache`, `data.cache_max_gb`)."""
    return DataCache.from_setting(spec.cache, spec.cache_max_gb)


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


def _decode(path: Path, cache: DataCache | None) -> np.ndarray:
    t = time.perf_counter()
    img = read_image(path)
    if not img.flags.writeable:  # PIL's buffer: torch takes only writable arrays (never written here)
        img = img.copy()
    DECODES[str(path)] += 1
    if cache is not None:
        cache.journal("decode", str(path), time.perf_counter() - t)
    return img


@functools.lru_cache(maxsize=8192)
def _map(path: Path, size: int, inode: int) -> torch.Tensor:
    """A whole entry file, memory-mapped (MAP_PRIVATE, never written: the page cache's one copy; no fd kept)."""
    return torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)


def _entry_arrays(entry: Entry) -> dict[str, torch.Tensor]:
    try:
        inode = entry.path.stat().st_ino
    except OSError:  # evicted or cleared just now: the next lookup prepares it again
        inode = -1
    whole = _map(entry.path, entry.size, inode)
    return {k: whole[off:off + math.prod(shape)].view(shape) for k, (off, shape) in entry.arrays.items()}


def _readonly(t: torch.Tensor) -> np.ndarray:
    arr = t.numpy()
    arr.flags.writeable = False
    return arr


def _store(cache: DataCache, name: str, key: str, arr: np.ndarray, meta: dict[str, Any]) -> torch.Tensor:
    """Write one array as a cache entry and map it back; on a full or failing disk, warn once and keep it in
    memory (nothing partial is left: the entry appears whole or not at all)."""
    try:
        entry = cache.write(name, {key: arr}, meta)
    except OSError as exc:
        _warn_once(f"write:{cache.root}", f"data cache {cache.root}: cannot write a prepared image "
                   f"({type(exc).__name__}: {exc.strerror or exc}); this process keeps what it prepares in memory "
                   f"instead (nothing is lost; free space or set data.cache to another folder, or 'off')")
        return torch.from_numpy(np.ascontiguousarray(arr))
    return _entry_arrays(entry)[key]


def _prepare_one(cache: DataCache, name: str, path: Path, scale: int, crop: int | None, what: str,
                 blocking: bool) -> Prepared | None:
    """The image prepared for (scale, crop), from the cache, or prepared now (and stored) under its lock. None
    when another process holds the lock and `blocking` is False (it is preparing this image: come back later)."""
    try:
        identity = FileIdentity.of(path)
    except OSError as exc:
        raise SrSearchError(f"cannot read image {path}: {type(exc).__name__}: {exc.strerror or exc}") from None
    hr_key, lr_key = hr_name(identity), lr_name(identity, scale, crop)
    hr_entry = cache.lookup(hr_key)
    lr_entry = cache.lookup(lr_key) if hr_entry is not None else None
    if hr_entry is None or lr_entry is None:
        reason = cache.unusable()
        if reason is not None:
            if cache.enabled:
                _warn_once(f"unusable:{cache.root}", f"data cache {cache.root} cannot be written ({reason}): this "
                           f"process prepares its images in memory instead, as without a cache (nothing is lost; "
                           f"set data.cache to a writable folder, or 'off' to silence this)")
            view = _crop(torch.from_numpy(_decode(path, None)), scale, crop, what, path)
            return _prepared(name, view, torch.from_numpy(degrade(view.numpy(), scale)))
    else:
        view = _crop(_entry_arrays(hr_entry)["hr"], scale, crop, what, path)
        return _prepared(name, view, _entry_arrays(lr_entry)["lr"])
    with cache.lock(hr_key, blocking) as held:
        if not held:
            return None
        hr_entry, lr_entry = cache.lookup(hr_key), cache.lookup(lr_key)  # another process may have finished it
        if hr_entry is not None:
            hr_t = _entry_arrays(hr_entry)["hr"]
        else:
            img = _decode(path, cache)
            hr_t = _store(cache, hr_key, "hr", img, {"source": identity.path, "width": img.shape[1],
                                                    "height": img.shape[0]})
        view = _crop(hr_t, scale, crop, what, path)
        if lr_entry is not None:
            lr_t = _entry_arrays(lr_entry)["lr"]
        else:
            t = time.perf_counter()
            lr = degrade(view.numpy(), scale)
            cache.journal("degrade", identity.path, time.perf_counter() - t)
            lr_t = _store(cache, lr_key, "lr", lr, {"source": identity.path, "scale": scale, "crop": crop})
    return _prepared(name, view, lr_t)


def _fill_threads() -> int:
    """Threads that decode and degrade while filling: PIL and torch release the GIL."""
    return max(1, min(8, os.cpu_count() or 1, max(2, torch.get_num_threads())))


def prepare(files: Sequence[tuple[str, Path]], scale: int, crop: int | None, cache: DataCache,
            what: str) -> list[Prepared]:
    """Each (name, path) prepared for (scale, crop): mapped from the node's cache, the missing ones decoded and
    degraded on several threads. Images another process is preparing are taken last (by then they are usually
    done); a process killed while preparing leaves nothing that is read. Eviction keeps these entries."""
    def one(i: int, blocking: bool) -> Prepared | None:
        name, path = files[i]
        return _prepare_one(cache, name, path, scale, crop, what, blocking)

    if not files:
        return []
    threads = min(_fill_threads(), len(files))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        out = list(pool.map(lambda i: one(i, False), range(len(files))))
        later = [i for i, p in enumerate(out) if p is None]
        for i, p in zip(later, pool.map(lambda i: one(i, True), later)):
            out[i] = p
    if cache.enabled and cache.max_bytes is not None and cache.unusable() is None:
        keep = set()
        for _, path in files:
            with contextlib.suppress(OSError):
                identity = FileIdentity.of(path)
                keep.update((hr_name(identity), lr_name(identity, scale, crop)))
        cache.evict(keep)
    return [p for p in out if p is not None]


def _prepared(name: str, hr: torch.Tensor, lr: torch.Tensor) -> Prepared:
    return Prepared(name, _readonly(hr), _readonly(lr), hr, lr)
# --- training data: held once, cut into batches ---------------------------------------------------------------


class Batch(NamedTuple):
    """A batch as cut on the host: uint8 (B, P, P, 3) LR and (B, P*s, P*s, 3) HR patches, un-augmented, and each
    sample's augmentation (horizontal flip, vertical flip, transpose), applied by `TrainData.finish` on the
    training device together with the float conversion. `nchw`: already augmented, as (B, 3, P, P) (cut for
    training on the CPU, where one strided copy per sample beats augmenting afterwards)."""

    lr: torch.Tensor
    hr: torch.Tensor
    hflip: np.ndarray
    vflip: np.ndarray
    transpose: np.ndarray
    nchw: bool = False


@dataclass
class TrainData:
    """HR/LR pairs held once and cut into augmented patches.

    `hr` and `lr` are (3, H, W) uint8 RGB views (of the node's memory-mapped cache, or of memory): the colours
    are converted per batch (`colors=1`: the MATLAB Y channel), as are the floats. `device` is where batches go
    (the training device); the images themselves stay in host memory unless `on_gpu` put them on that device.
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
        self._lr_h = np.array([h for h, _ in self._sizes], dtype=np.int64)
        self._lr_w = np.array([w for _, w in self._sizes], dtype=np.int64)
        self._host = all(t.device.type == "cpu" for t in self.hr)
        # each image as HWC; on the host as 2-D (H, W*3) numpy rows, so a patch is one block copy
        self._hwc_hr = [_hwc(t) for t in self.hr]
        self._hwc_lr = [_hwc(t) for t in self.lr]
        if self._host:
            self._np_hr = [t.numpy() for t in self._hwc_hr]
            self._np_lr = [t.numpy() for t in self._hwc_lr]
            self._rows_hr = [a.reshape(a.shape[0], -1) for a in self._np_hr]
            self._rows_lr = [a.reshape(a.shape[0], -1) for a in self._np_lr]

    def max_lr_patch(self) -> int:
        return self._min_side

    def nbytes(self) -> int:
        """Bytes of image data held (HR and LR, uint8)."""
        return sum(t.numel() for t in self.hr) + sum(t.numel() for t in self.lr)

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
        """Random (lr, hr) float patches on `device`: image uniformly (BasicSR: one crop per drawn image), random
        position, random flips and 90-degree rotation. Deterministic given `generator` (a CPU generator); the
        same patches as sr-search 0.2 drew for the same generator state."""
        cut = self.cut(batch_size, lr_patch, generator, augment=self.device.type == "cpu")
        return self.finish(cut, self.device, torch.float32)

    def cut(self, batch_size: int, lr_patch: int, generator: torch.Generator, pin: bool = False,
            augment: bool = False) -> Batch:
        """The host side of `batch`: draw the samples and copy their uint8 patches, one block copy each (numpy: no
        torch intra-op threads for tiny copies, which thrash when a trial's threads compete for cores).
        Un-augmented and HWC for a GPU, which augments and converts them (`pin`: into pinned memory, for a
        non-blocking copy); `augment`: flipped and transposed here, NCHW (for training on the CPU)."""
        self.check_fits(lr_patch)
        s, p = self.scale, lr_patch
        draws = torch.rand((batch_size, 6), generator=generator, dtype=torch.float64).numpy()
        i = (draws[:, 0] * len(self.lr)).astype(np.int64)
        top = (draws[:, 1] * (self._lr_h[i] - p + 1)).astype(np.int64)
        left = (draws[:, 2] * (self._lr_w[i] - p + 1)).astype(np.int64)
        flags = draws[:, 3:] < 0.5
        if not self._host:  # images on the GPU (data.on_gpu): cut there
            dev = self.hr[0].device
            lr_out = torch.empty((batch_size, p, p, 3), dtype=torch.uint8, device=dev)
            hr_out = torch.empty((batch_size, p * s, p * s, 3), dtype=torch.uint8, device=dev)
            for b, (k, y, x) in enumerate(zip(i.tolist(), top.tolist(), left.tolist())):
                lr_out[b] = self._hwc_lr[k][y:y + p, x:x + p]
                hr_out[b] = self._hwc_hr[k][y * s:(y + p) * s, x * s:(x + p) * s]
            return Batch(lr_out, hr_out, flags[:, 0], flags[:, 1], flags[:, 2])
        if augment:
            lr_out = torch.empty((batch_size, 3, p, p), dtype=torch.uint8, pin_memory=pin)
            hr_out = torch.empty((batch_size, 3, p * s, p * s), dtype=torch.uint8, pin_memory=pin)
            lr_np, hr_np = lr_out.numpy(), hr_out.numpy()
            for b, (k, y, x, (hf, vf, tr)) in enumerate(zip(i.tolist(), top.tolist(), left.tolist(),
                                                             flags.tolist())):
                lv = self._np_lr[k][y:y + p, x:x + p].transpose(2, 0, 1)
                hv = self._np_hr[k][y * s:(y + p) * s, x * s:(x + p) * s].transpose(2, 0, 1)
                if hf:
                    lv, hv = lv[..., ::-1], hv[..., ::-1]
                if vf:
                    lv, hv = lv[..., ::-1, :], hv[..., ::-1, :]
                if tr:
                    lv, hv = lv.swapaxes(-1, -2), hv.swapaxes(-1, -2)
                lr_np[b], hr_np[b] = lv, hv
            none = np.zeros(batch_size, dtype=bool)
            return Batch(lr_out, hr_out, none, none, none, nchw=True)
        lr_out = torch.empty((batch_size, p, p, 3), dtype=torch.uint8, pin_memory=pin)
        hr_out = torch.empty((batch_size, p * s, p * s, 3), dtype=torch.uint8, pin_memory=pin)
        lr_rows = lr_out.numpy().reshape(batch_size, p, p * 3)
        hr_rows = hr_out.numpy().reshape(batch_size, p * s, p * s * 3)
        for b, (k, y, x) in enumerate(zip(i.tolist(), top.tolist(), left.tolist())):
            lr_rows[b] = self._rows_lr[k][y:y + p, x * 3:(x + p) * 3]
            hr_rows[b] = self._rows_hr[k][y * s:(y + p) * s, x * s * 3:(x + p) * s * 3]
        return Batch(lr_out, hr_out, flags[:, 0], flags[:, 1], flags[:, 2])

    def finish(self, batch: Batch, device: torch.device | str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """A cut batch as model input on `device` in `dtype`: copied there as uint8 (non-blocking from pinned
        memory), augmented, converted to float there (RGB / 255, or the Y channel)."""
        dev = torch.device(device)
        codes = batch.hflip.astype(np.int64) + 2 * batch.vflip + 4 * batch.transpose
        out = []
        with _one_thread(dev):
            for x in (batch.lr, batch.hr):
                x = x.to(dev, non_blocking=True)
                if not batch.nchw:
                    x = _orient(x.permute(0, 3, 1, 2), codes)
                x = to_colors(x, self.colors, 255.0)
                out.append(x if x.dtype == dtype else x.to(dtype))
        return out[0], out[1]


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Batch conversion on the CPU on one torch thread: a few MB per op, where a second intra-op thread that
    another process has taken the core of makes every op wait for it (sr-search 0.2's sampler ran 20-30x slower
    with two threads on a busy 2-core machine; the training step keeps the trial's threads)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _hwc(t: torch.Tensor) -> torch.Tensor:
    """A (3, H, W) image as a contiguous (H, W, 3) tensor (a view when it is one already)."""
    hwc = t.permute(1, 2, 0)
    return hwc if hwc.is_contiguous() else hwc.contiguous()


def _orient(x: torch.Tensor, codes: np.ndarray) -> torch.Tensor:
    """Per-sample flips and transpose of an (B, C, P, P) batch, as sr-search 0.2 applied them one sample at a
    time (code = hflip + 2 vflip + 4 transpose): one group per distinct code, at most eight."""
    def apply(t: torch.Tensor, code: int) -> torch.Tensor:
        dims = (-1,) * (code & 1) + (-2,) * ((code >> 1) & 1)
        if dims:
            t = t.flip(dims)
        return t.transpose(-1, -2) if code & 4 else t

    present = np.unique(codes)
    if len(present) == 1:
        return apply(x, int(present[0])).contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for code in present.tolist():
        sel = torch.from_numpy(np.flatnonzero(codes == code)).to(x.device)
        out.index_copy_(0, sel, apply(x.index_select(0, sel), code))
    return out


def _train_files(spec: DataSpec) -> list[tuple[str, Path]]:
    files = source_files(spec.train, "train", "data.train folder")
    return files[:spec.train_max_images] if spec.train_max_images is not None else files


def load_train(spec: DataSpec, scale: int, colors: int, device: torch.device | str = "cpu") -> TrainData:
    """The training images prepared for `scale` (decoded and degraded once per node, in `data.cache`), mapped
    read-only; batches go to `device`. With `data.on_gpu` and a CUDA device the images are copied there."""
    _check_scale(scale)
    _check_colors(colors)
    dev = torch.device(device)
    prepared = prepare(_train_files(spec), scale, None, data_cache(spec), "training")
    hr = [p.hr_t.permute(2, 0, 1) for p in prepared]
    lr = [p.lr_t.permute(2, 0, 1) for p in prepared]
    if spec.on_gpu and dev.type == "cuda":
        hr, lr = [t.to(dev) for t in hr], [t.to(dev) for t in lr]
    return TrainData(names=[p.name for p in prepared], hr=hr, lr=lr, scale=scale, colors=colors, device=dev)


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
    """Each validation set: HR centre-cropped to `val_max_size`, mod-cropped, and its 8-bit bicubic LR (prepared
    once per node in the cache, as the training images are)."""
    _check_scale(scale)
    _check_colors(colors)
    cache = data_cache(spec)
    sets: dict[str, list[ValImage]] = {}
    for set_name, source in spec.val.items():
        files = source_files(source, "val", f"data.val.{set_name} folder")
        prepared = prepare(files, scale, spec.val_max_size, cache, f"validation set {set_name!r}")
        sets[set_name] = [ValImage(name=p.name, hr=_chw(p.hr), lr=to_colors(_chw(p.lr), colors, 255.0))
                          for p in prepared]
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
