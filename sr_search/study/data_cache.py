"""The node's prepared-image cache: each training or validation image decoded once per node, degraded once per
(scale, crop), and kept as uint8 arrays in files that every trial process on the node maps read-only, so the page
cache holds one copy however many trials run.

Layout under the cache folder (`data.cache`, default `$SR_SEARCH_DATA_CACHE`, else `$XDG_CACHE_HOME/sr-search/data`,
else `~/.cache/sr-search/data`)::

    v1/entries/<name>.u8   one prepared array set: a 4096-byte header (magic + JSON) then page-aligned arrays
    v1/locks/<image>.lock  flock'd while a process prepares that image (other processes prepare other images first)
    v1/tmp/                files being written; renamed into entries/ only once complete
    v1/journal.log         one line per decode and per degrade (what `sr-search cache info` counts)

An entry is named by the source file's identity (resolved path, size, mtime, inode: as `make` and `rsync` decide
that a file changed) and by what was done to it (`hr`: the decoded image; `lr`: the 8-bit MATLAB-bicubic LR of a
given scale and crop). A changed file has a new identity, so it is prepared again; its old entries age out.
Entries appear by an atomic rename of a complete file: a process killed while filling leaves only a file in tmp/,
which is never read and is removed by the next process that prepares that image. Two processes filling at once
each take an image's lock before preparing it; without working locks (some network file systems) both prepare
it and the second rename replaces the first with the same bytes, so readers still see one whole entry.

Torch-free (numpy only): `sr-search validate` uses it before Ray starts to skip images whose decoded entry already
proves them readable; `sr_search.run.data` prepares and maps the entries.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SrSearchError

FORMAT = 1
MAGIC = b"SR-SEARCH-DATA 1\n"
HEADER = 4096
ALIGN = 4096
#: what an LR entry was made with; bump when the degradation changes (old entries then age out)
DEGRADE = "matlab-bicubic-aa/round-u8/1"
ENV = "SR_SEARCH_DATA_CACHE"
#: the default size bound (the least recently used entries go first beyond it)
DEFAULT_MAX_GB = 200.0
#: an entry's last use is recorded (its mtime) at most this often, so a trial mapping 800 images writes no metadata
TOUCH_EVERY = 600.0
_SUFFIX = ".u8"


def default_root() -> Path:
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sr-search" / "data"


@dataclass(frozen=True)
class FileIdentity:
    """What names a source file's content without reading it: resolved path, size, mtime (ns) and inode."""

    path: str
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: str | Path) -> FileIdentity:
        p = Path(path).resolve()
        st = p.stat()
        return cls(str(p), st.st_size, st.st_mtime_ns, st.st_ino)

    def name(self, *what: Any) -> str:
        """The entry name of this file prepared as `what` (a hex digest)."""
        text = json.dumps([FORMAT, self.path, self.size, self.mtime_ns, self.inode, *what], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:40]


def hr_name(identity: FileIdentity) -> str:
    return identity.name("hr")


def lr_name(identity: FileIdentity, scale: int, crop: int | None) -> str:
    return identity.name("lr", scale, crop, DEGRADE)


@dataclass(frozen=True)
class Entry:
    """A complete entry on disk: its file, total size, and each array's (offset, shape) in it, plus its metadata."""

    path: Path
    size: int
    arrays: dict[str, tuple[int, tuple[int, ...]]]
    meta: dict[str, Any]


@dataclass(frozen=True)
class CacheInfo:
    root: Path
    entries: int
    bytes: int
    partial: int
    decodes: int
    degrades: int
    max_bytes: int | None


class DataCache:
    """One cache folder. `root=None` disables it (every process prepares in memory, as sr-search 0.2 did)."""

    def __init__(self, root: str | Path | None, max_gb: float | None = DEFAULT_MAX_GB) -> None:
        self.root = None if root is None else Path(root).expanduser()
        self.max_bytes = None if max_gb is None else int(max_gb * 1e9)
        self._unusable: str | None = None
        self._checked = False
        self._check_lock = threading.Lock()  # filling threads ask at once; one checks, the others wait for it

    @classmethod
    def from_setting(cls, value: str | None, max_gb: float | None = DEFAULT_MAX_GB) -> DataCache:
        """`data.cache`: a folder, 'off' (no cache), or None (the default folder)."""
        if value is not None and str(value).strip().lower() in ("off", "none", "false"):
            return cls(None)
        return cls(default_root() if value is None else value, max_gb)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _dir(self, part: str) -> Path:
        assert self.root is not None
        return self.root / f"v{FORMAT}" / part

    # --- reading ---------------------------------------------------------------------------------------------

    def lookup(self, name: str, touch: bool = True) -> Entry | None:
        """The complete entry `name`, or None (missing, or unreadable: it is then prepared again). `touch`: mark
        it used now (the size bound removes the least recently used first)."""
        if self.root is None:
            return None
        path = self._dir("entries") / f"{name}{_SUFFIX}"
        try:
            with open(path, "rb") as f:
                head = f.read(HEADER)
                st = os.fstat(f.fileno())
        except OSError:
            return None
        entry = _parse(path, head, st.st_size)
        if entry is not None and touch and self.max_bytes is not None and time.time() - st.st_mtime > TOUCH_EVERY:
            with contextlib.suppress(OSError):  # last use, for eviction (a read-only cache just keeps its order)
                os.utime(path)
        return entry

    def read(self, entry: Entry) -> dict[str, np.ndarray]:
        """The entry's arrays, memory-mapped read-only (numpy; `sr_search.run.data` maps them as tensors)."""
        whole = np.memmap(entry.path, dtype=np.uint8, mode="r", shape=(entry.size,))
        return {k: whole[off:off + int(np.prod(shape))].reshape(shape) for k, (off, shape) in entry.arrays.items()}

    # --- writing ---------------------------------------------------------------------------------------------

    def unusable(self) -> str | None:
        """Why entries cannot be written here (None: they can). Checked once per process by writing a probe."""
        if self.root is None:
            return "the cache is off (data.cache: off)"
        with self._check_lock:
            if not self._checked:
                try:
                    for part in ("entries", "locks", "tmp"):
                        self._dir(part).mkdir(parents=True, exist_ok=True)
                    probe = self._dir("tmp") / f"probe.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}"
                    probe.write_bytes(b"x")
                    probe.unlink()
                except OSError as exc:
                    self._unusable = f"{type(exc).__name__}: {exc.strerror or exc}"
                self._checked = True
        return self._unusable

    def write(self, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Entry:
        """Write an entry (temp file, then an atomic rename). Raises OSError (disk full, read-only...) after removing
        its temp file: nothing partial is ever visible under entries/."""
        layout, offset = {}, HEADER
        for key, arr in arrays.items():
            if arr.dtype != np.uint8:
                raise SrSearchError(f"cache entries hold uint8 arrays; {key!r} is {arr.dtype}")
            layout[key] = (offset, tuple(int(s) for s in arr.shape))
            offset += -(-arr.nbytes // ALIGN) * ALIGN
        head = MAGIC + json.dumps({"format": FORMAT, "size": offset, "meta": meta,
                                   "arrays": {k: [o, list(s)] for k, (o, s) in layout.items()}}).encode()
        if len(head) >= HEADER:
            raise SrSearchError(f"cache entry header too long ({len(head)} bytes)")
        tmp = self._dir("tmp") / f"{name}.{socket.gethostname()}.{os.getpid()}.{time.monotonic_ns()}.part"
        final = self._dir("entries") / f"{name}{_SUFFIX}"
        try:
            with open(tmp, "wb") as f:
                f.write(head.ljust(HEADER, b"\0"))
                for key, arr in arrays.items():
                    f.seek(layout[key][0])
                    f.write(np.ascontiguousarray(arr).data)
                f.truncate(offset)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return Entry(final, offset, layout, meta)

    @contextlib.contextmanager
    def lock(self, name: str, blocking: bool) -> Iterator[bool]:
        """Hold the image's lock (yields True), or yield False when another process holds it and not `blocking`.
        Where locks cannot be taken (read-only folder, no flock), yields True: entries stay whole without it."""
        import fcntl

        try:
            fd = os.open(self._dir("locks") / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield True
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    yield False
                    return
                yield True  # no flock here: fill without it
                return
            self._drop_partials(name)
            yield True
        finally:
            os.close(fd)  # closing releases the lock; a killed process's lock is released by the kernel

    def _drop_partials(self, name: str) -> None:
        """Remove temp files an earlier, killed preparation of `name` left (we hold its lock: nobody writes them)."""
        for part in self._dir("tmp").glob(f"{name}*.part"):
            with contextlib.suppress(OSError):
                part.unlink()

    def journal(self, what: str, path: str, seconds: float) -> None:
        """One line per decode or degrade (appended whole: O_APPEND), so a node's preparations can be counted."""
        if self.root is None or self._unusable:
            return
        line = json.dumps({"what": what, "path": path, "seconds": round(seconds, 4), "host": socket.gethostname(),
                           "pid": os.getpid(), "at": time.time()}) + "\n"
        with contextlib.suppress(OSError):
            fd = os.open(self.root / f"v{FORMAT}" / "journal.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def journal_lines(self) -> list[dict[str, Any]]:
        if self.root is None:
            return []
        path = self.root / f"v{FORMAT}" / "journal.log"
        try:
            text = path.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # --- size bound, info, clear -----------------------------------------------------------------------------

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        if self.root is None:
            return out
        for p in self._dir("entries").glob(f"*{_SUFFIX}"):
            with contextlib.suppress(OSError):
                st = p.stat()
                out.append((st.st_mtime, st.st_size, p))
        return out

    def evict(self, keep: set[str]) -> int:
        """Remove the least recently used entries beyond the size bound, never those named in `keep` (the data a
        process is about to use). A mapped entry that is removed stays readable to whoever maps it. Returns the
        bytes removed; warns when `keep` alone exceeds the bound."""
        if self.root is None or self.max_bytes is None or self.unusable():
            return 0
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path.name.removesuffix(_SUFFIX) in keep:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
                removed += size
        if total > self.max_bytes:
            warnings.warn(f"data cache {self.root}: the study's prepared images take {total / 1e9:.2f} GB, above "
                          f"data.cache_max_gb={self.max_bytes / 1e9:g}; they are kept (raise the bound)",
                          stacklevel=2)
        return removed

    def info(self) -> CacheInfo:
        entries = self._entries()
        partial = len(list(self._dir("tmp").glob("*.part"))) if self.root is not None else 0
        lines = self.journal_lines()
        return CacheInfo(self.root or Path("-"), len(entries), sum(s for _, s, _ in entries), partial,
                         sum(1 for x in lines if x.get("what") == "decode"),
                         sum(1 for x in lines if x.get("what") == "degrade"), self.max_bytes)

    def clear(self) -> int:
        """Remove every entry, lock, partial file and the journal; returns the bytes freed. Processes that map an
        entry keep reading it; the next one prepares its images again."""
        if self.root is None:
            return 0
        freed = 0
        for part in ("entries", "tmp", "locks"):
            for p in self._dir(part).glob("*"):
                with contextlib.suppress(OSError):
                    freed += p.stat().st_size
                    p.unlink()
        with contextlib.suppress(OSError):
            (self.root / f"v{FORMAT}" / "journal.log").unlink()
        return freed


def _parse(path: Path, head: bytes, size: int) -> Entry | None:
    if not head.startswith(MAGIC):
        return None
    try:
        doc = json.loads(head[len(MAGIC):].rstrip(b"\0"))
        arrays = {k: (int(o), tuple(int(s) for s in shape)) for k, (o, shape) in doc["arrays"].items()}
        if doc.get("format") != FORMAT or int(doc["size"]) != size:
            return None  # another format, or a file cut short (a disk that lost its tail): prepared again
        if any(o + int(np.prod(s)) > size for o, s in arrays.values()):
            return None
        return Entry(path, size, arrays, doc.get("meta") or {})
    except (ValueError, KeyError, TypeError):
        return None


def source_size(cache: DataCache, path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file whose decoded entry is in the cache (so it is known to decode), or None."""
    if not cache.enabled:
        return None
    try:
        identity = FileIdentity.of(path)
    except OSError:
        return None
    entry = cache.lookup(hr_name(identity), touch=False)
    if entry is None or "hr" not in entry.arrays:
        return None
    h, w = entry.arrays["hr"][1][:2]
    return w, h
