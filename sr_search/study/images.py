"""The images a study names, as files: which files a source holds (a folder, searched recursively, or `builtin:`),
and each file's size once it is known to decode. Torch-free, so `sr-search validate` and `launch` check the data
before Ray starts; `sr_search.run.data` reads the same files into tensors.

A file counts as readable when PIL identifies it and its image data are whole: a PNG's chunks are read to the end
with their CRCs checked (a truncated or corrupted file fails; nothing is inflated, so 800 DIV2K images take about a
second), other formats are decoded. The answer is kept per process by (path, size, mtime), so re-checking a study
(`--trials`, overrides) costs nothing, and a file whose decoded image is already in the node's cache
(`sr_search.study.data_cache`) is not opened at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import SrSearchError
from .data_cache import DataCache, source_size
from .settings import BUILTIN

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

#: the built-in split (see sr_search.run.data): no scene on both sides; the stereo pair is one scene
BUILTIN_TRAIN: dict[str, tuple[str, ...]] = {
    "coffee": ("coffee.png",),
    "rocket": ("rocket.jpg",),
    "motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),
    "immunohistochemistry": ("ihc.png",),
}
BUILTIN_VAL: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut.png",),
    "chelsea": ("chelsea.png",),
}


def builtin_folder() -> Path:
    """Where scikit-image keeps its sample photos (found without importing scikit-image)."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SrSearchError("the built-in image set needs scikit-image (pip install scikit-image)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def list_images(folder: str | Path, what: str = "image folder") -> list[Path]:
    """Image files under `folder` (recursive, sorted); a missing or empty folder is an error naming it."""
    root = Path(folder)
    if not root.exists():
        raise SrSearchError(f"{what} {str(folder)!r} does not exist")
    if not root.is_dir():
        raise SrSearchError(f"{what} {str(folder)!r} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SrSearchError(
            f"{what} {str(folder)!r} contains no images (looked recursively for {', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def source_files(source: str, split: str, what: str) -> list[tuple[str, Path]]:
    """(name, path) pairs of a folder or of the built-in `split` ('train' or 'val')."""
    if source == BUILTIN:
        folder = builtin_folder()
        table = BUILTIN_TRAIN if split == "train" else BUILTIN_VAL
        pairs = []
        for scene, files in table.items():
            for f in files:
                path = folder / f
                if not path.is_file():
                    raise SrSearchError(f"built-in image {f!r} is missing from scikit-image ({folder})")
                pairs.append((Path(f).stem if len(files) > 1 else scene, path))
        return pairs
    if source.startswith("builtin"):
        raise SrSearchError(f"{what} {source!r}: the built-in set is spelled exactly {BUILTIN!r}")
    root = Path(source)
    return [(str(p.relative_to(root).with_suffix("")), p) for p in list_images(root, what)]


# --- what each file holds ----------------------------------------------------------------------------------

#: (path, size, mtime_ns) -> (width, height), or why the file cannot be read
_SEEN: dict[tuple[str, int, int], tuple[int, int] | str] = {}


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file whose data are whole; `SrSearchError` naming the path otherwise."""
    found = _probe(path)
    if isinstance(found, str):
        raise SrSearchError(f"cannot read image {path}: {found}")
    return found


def image_sizes(paths: Sequence[Path], cache: DataCache | None = None) -> list[tuple[int, int] | str]:
    """`image_size` of each path, or why it cannot be read; files are checked in parallel (PIL releases the GIL).
    A file whose decoded image is in `cache` (the node's prepared images) is known to decode: it is not opened."""
    def probe(path: Path) -> tuple[int, int] | str:
        return _probe(path, cache)

    if len(paths) <= 4:
        return [probe(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(probe, paths))


def _probe(path: Path, cache: DataCache | None = None) -> tuple[int, int] | str:
    try:
        stat = path.stat()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SEEN and cache is not None:
        known = source_size(cache, path)
        if known is not None:
            _SEEN[key] = known
    if key not in _SEEN:
        if len(_SEEN) > 200_000:
            _SEEN.clear()
        _SEEN[key] = _read_size(path)
    return _SEEN[key]


def _read_size(path: Path) -> tuple[int, int] | str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = im.size
            if im.format == "PNG":
                im.verify()  # every chunk to IEND, CRCs checked: truncation and corruption, without inflating
            else:
                im.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        return f"{type(exc).__name__}: {exc}"
    if size[0] < 1 or size[1] < 1:
        return f"it has no pixels ({size[0]}x{size[1]})"
    return size
