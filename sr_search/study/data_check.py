"""The study's images, checked before anything starts (`sr-search validate` and `launch` alike): every folder holds
images, every file reads (see `sr_search.study.images`), every training image holds one HR patch
(`lr_patch * scale` px a side) and every validation image, after `val_max_size`, is large enough for each
candidate's pixel-unshuffle and its block's minimum tile. Problems name the path and the minimum size."""

from __future__ import annotations

from pathlib import Path

from ..errors import SrSearchError
from ..model.blocks import family_of
from .checks import candidate_cases, study_scale
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
    train = _readable(doc, ("data", "train"), data.train, "train", "data.train folder", data.train_max_images)
    if train and scale is not None:
        _check_train_sizes(doc, train, study.train.lr_patch, scale)
    for name, source in data.val.items():
        images = _readable(doc, ("data", "val", name), source, "val", f"data.val.{name} folder", None)
        if images and scale is not None:
            _check_val_sizes(doc, ("data", "val", name), images, study, space, scale)


def _readable(doc: Doc, key: KeyPath, source: str, split: str, what: str,
              limit: int | None) -> list[tuple[Path, int, int]]:
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
    sizes = image_sizes(files)
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
