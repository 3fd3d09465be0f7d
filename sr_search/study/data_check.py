"""The study's images, checked before anything starts (`sr-search validate` and `launch` alike): every folder holds
images, every file reads (see `sr_search.study.images`; files already prepared in the node's cache are not opened),
every training image holds one HR patch (`lr_patch * scale` px a side) and every validation image, after
`val_max_size`, is large enough for each candidate's pixel-unshuffle and its block's minimum tile. Problems name
the path and the minimum size. The prepared data's size is estimated against the machine's memory: a problem when
`data.on_gpu` copies exceed a GPU's memory, a warning when one copy exceeds the host's RAM."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import SrSearchError
from ..model.blocks import family_of
from .checks import candidate_cases, study_scale
from .data_cache import DataCache
from .images import image_sizes, source_files
from .model import Study
from .settings import BUILTIN
from .space import SearchSpace
from .yamlfile import Doc, KeyPath

#: how many offending files a problem lists before it counts the rest
SHOWN = 5


def check_data(doc: Doc, study: Study, space: SearchSpace) -> None:
    """Record a problem in `doc` for every image source that cannot serve the study's candidates."""
    data = study.data
    scale = study_scale(study, space)
    cache = DataCache.from_setting(data.cache, data.cache_max_gb)
    train = _readable(doc, ("data", "train"), data.train, "train", "data.train folder", data.train_max_images, cache)
    if train and scale is not None:
        _check_train_sizes(doc, train, study.train.lr_patch, scale)
    val_bytes = 0
    for name, source in data.val.items():
        images = _readable(doc, ("data", "val", name), source, "val", f"data.val.{name} folder", None, cache)
        if images and scale is not None:
            _check_val_sizes(doc, ("data", "val", name), images, study, space, scale)
            val_bytes += sum(prepared_bytes(w, h, scale) for _, w, h in images)
    if train and scale is not None:
        _check_memory(doc, study, sum(prepared_bytes(w, h, scale) for _, w, h in train), val_bytes)


def prepared_bytes(width: int, height: int, scale: int) -> int:
    """Bytes one image takes once prepared: the decoded HR (uint8 RGB) and its LR at `scale`."""
    return width * height * 3 + (width // scale) * (height // scale) * 3


def host_memory() -> int | None:
    """The machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gpu_memory() -> int | None:
    """The smallest visible CUDA GPU's memory in bytes, or None without one (torch is imported only when asked)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no driver, no torch: nothing to compare against
        return None


def _check_memory(doc: Doc, study: Study, train_bytes: int, val_bytes: int) -> None:
    """The prepared data against the machine: one copy per node in host memory (the page cache shares it between
    trials); with `data.on_gpu` one copy per trial on its GPU."""
    gb = 1e9
    ram = host_memory()
    total = train_bytes + val_bytes
    if ram is not None and total > 0.8 * ram:
        warnings.warn(f"the prepared images take {total / gb:.1f} GB ({train_bytes / gb:.1f} GB training, "
                      f"{val_bytes / gb:.2f} GB validation), above 80% of this machine's {ram / gb:.1f} GB of RAM: "
                      f"they are memory-mapped, so training reads from disk whatever the page cache cannot hold "
                      f"(slower, not failing); use fewer images (data.train_max_images) or a larger node",
                      stacklevel=2)
    if not study.data.on_gpu:
        return
    share = study.resources.gpus_per_trial
    per_gpu = max(1, int(1 / share)) if isinstance(share, (int, float)) and 0 < share < 1 else 1
    need = train_bytes * per_gpu
    memory = gpu_memory()
    if memory is not None and need > 0.5 * memory:
        doc.problem(("data", "on_gpu"),
                    f"data.on_gpu copies the training images ({train_bytes / gb:.2f} GB) to the GPU of every "
                    f"trial: {per_gpu} trial(s) per GPU need {need / gb:.2f} GB, more than half of its "
                    f"{memory / gb:.1f} GB (the models and batches need the rest); leave data.on_gpu false (the "
                    f"images stay in host memory, once per node, and each batch is copied)")


def _readable(doc: Doc, key: KeyPath, source: str, split: str, what: str,
              limit: int | None, cache: DataCache | None = None) -> list[tuple[Path, int, int]]:
    """(path, width, height) of the source's readable images (those training would use); a problem for an empty
    source and for each unreadable file."""
    if source != BUILTIN and not source.startswith("builtin") and not Path(source).is_dir():
        return []  # check_references reported it
    try:
        files = [path for _, path in source_files(source, split, what)]
    except SrSearchError as exc:
        doc.problem(key, str(exc))
        return []
    if limit is not None:
        files = files[:limit]
    sizes = image_sizes(files, cache)
    broken = [(path, why) for path, why in zip(files, sizes) if isinstance(why, str)]
    for path, why in broken[:SHOWN]:
        doc.problem(key, f"cannot read image {path}: {why}")
    if len(broken) > SHOWN:
        doc.problem(key, f"... and {len(broken) - SHOWN} more unreadable images under {source}")
    return [(path, *size) for path, size in zip(files, sizes) if not isinstance(size, str)]


def _check_train_sizes(doc: Doc, images: list[tuple[Path, int, int]], lr_patch: int, scale: int) -> None:
    """Each training image must hold one HR patch of `lr_patch * scale` px a side (the LR patch already divides by
    every unshuffle: `check_patch`)."""
    need = lr_patch * scale
    small = sorted((min(w, h), path, w, h) for path, w, h in images if min(w, h) // scale < lr_patch)
    if not small:
        return
    fits = min(min(w, h) for _, w, h in images) // scale
    shown = ", ".join(f"{path} ({w}x{h})" for _, path, w, h in small[:SHOWN])
    more = f" and {len(small) - SHOWN} more" if len(small) > SHOWN else ""
    smaller = f", or use lr_patch <= {fits}" if fits >= 1 else ""
    if len(small) == len(images):
        doc.problem(("train", "lr_patch"),
                    f"lr_patch={lr_patch} at x{scale} needs training images of at least {need}x{need} px, and none "
                    f"of the {len(images)} is that large: {shown}{more}; "
                    + (f"the largest patch every image holds is lr_patch={fits}" if fits >= 1 else
                       "use larger images"))
    else:
        doc.problem(("data", "train"),
                    f"{len(small)} of {len(images)} training images are smaller than the {need}x{need} px HR patch "
                    f"(lr_patch {lr_patch} x scale {scale}): {shown}{more}; drop them{smaller}")


def _check_val_sizes(doc: Doc, key: KeyPath, images: list[tuple[Path, int, int]], study: Study,
                     space: SearchSpace, scale: int) -> None:
    """Each validation image, centre-cropped to `val_max_size` and mod-cropped, must give every candidate's
    unshuffled LR input at least its block's minimum tile (and at least one LR pixel)."""
    cases = candidate_cases(study, space) or set()
    needs = [(u * max(family_of(b).min_lr_size, 1), b, u) for b, u in cases] or [(1, None, 1)]
    need_lr, block, u = max(needs, key=lambda n: n[0])
    need = need_lr * scale
    why = (f"LR {need_lr} px at x{scale}" + (f", for {block} with unshuffle {u}" if block is not None else ""))
    crop = study.data.val_max_size
    if crop is not None and crop < need:
        if key[-1] == next(iter(study.data.val)):  # once, not once per set
            doc.problem(("data", "val_max_size"), f"val_max_size={crop} crops validation images below the "
                                                  f"{need}x{need} px the candidates need ({why})")
        return
    small = [(path, w, h) for path, w, h in images
             if min(min(w, h), crop or min(w, h)) // scale < need_lr]
    for path, w, h in small[:SHOWN]:
        doc.problem(key, f"validation image {path} is {w}x{h} px; the candidates need at least {need}x{need} px "
                         f"({why}); drop it")
    if len(small) > SHOWN:
        doc.problem(key, f"... and {len(small) - SHOWN} more validation images smaller than {need}x{need} px")
