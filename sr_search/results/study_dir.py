"""`StudyDir`: the layout of a study folder, spelled in one place (docs/architecture.md, "A study folder"). No other
module writes a path literal of a study folder; they ask this object.

    <study>/study.yaml              the resolved study, frozen when it started
    <study>/resolved.yaml           what it resolved to: the search space's content, the timing protocol
    <study>/optuna.db               Optuna's SQLite storage (optuna-dashboard sqlite:///<study>/optuna.db)
    <study>/ray/                    the Tune experiment (restorable); trial folders and their checkpoints
    <study>/trials/<id>.parquet     one row per trial, written atomically
    <study>/results.parquet         the rows consolidated
    <study>/timing_cache.parquet    timings by deployed network
    <study>/checkpoints/<id>.pt     trained weights (keep_checkpoints: true)
    <study>/rungs/<id>.json         successive halving: rung points, promotions, the latest rung checkpoint
    <study>/progress.json           what `sr-search status` reads
    <study>/report/, export/        the report, exported networks
    <study>/set_aside/              unreadable files moved out of the way (never deleted), e.g.
                                    set_aside/trials/0003.parquet
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..columns import DEFAULT_OBJECTIVES
from ..errors import SrSearchError, StudyWriteError
from ..study.yamlfile import load_bounded

#: the Tune experiment's name inside a study folder
TUNE_NAME = "ray"
#: the runner's trial ids: four or more digits (0000, 0001, ..., 12345)
TRIAL_ID = re.compile(r"[0-9]{4,}")


@dataclass(frozen=True)
class StudyDir:
    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    def __fspath__(self) -> str:
        return str(self.root)

    # --- files ---------------------------------------------------------------------------------------------

    @property
    def study_file(self) -> Path:
        return self.root / "study.yaml"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.optuna_db.resolve()}"

    @property
    def tune(self) -> Path:
        """The Tune experiment folder (`RunConfig(storage_path=root, name=TUNE_NAME)`)."""
        return self.root / TUNE_NAME

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    def trial_file(self, trial_id: str) -> Path:
        return self.trials / f"{check_trial_id(trial_id)}.parquet"

    @property
    def rungs(self) -> Path:
        """Successive halving's record: each trial's rung points, promotions and latest rung checkpoint."""
        return self.root / "rungs"

    def rung_file(self, trial_id: str) -> Path:
        return self.rungs / f"{check_trial_id(trial_id)}.json"

    @property
    def results(self) -> Path:
        return self.root / "results.parquet"

    @property
    def timing_cache(self) -> Path:
        return self.root / "timing_cache.parquet"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, trial_id: str) -> Path:
        return self.checkpoints / f"{check_trial_id(trial_id)}.pt"

    @property
    def progress(self) -> Path:
        return self.root / "progress.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def exports(self) -> Path:
        return self.root / "export"

    def export_file(self, trial_id: str, fmt: str) -> Path:
        return self.exports / f"{check_trial_id(trial_id)}.{fmt}"

    @property
    def set_aside_dir(self) -> Path:
        return self.root / "set_aside"

    def aside_of(self, path: Path) -> Path:
        """Where `set_aside` first puts `path` (a file of this study)."""
        try:
            relative = Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            relative = Path(Path(path).name)
        return self.set_aside_dir / relative

    def set_aside(self, path: Path) -> Path:
        """Move an unreadable file of this study out of the way, never deleting it: `set_aside/<its path>`, with
        `.1`, `.2`, ... when one is there already. Returns where it went; `StudyWriteError` when it cannot move."""
        path = Path(path)
        target = first = self.aside_of(path)
        n = 0
        while target.exists() or target.is_symlink():
            n += 1
            target = first.with_name(f"{first.name}.{n}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
        except OSError as exc:
            raise StudyWriteError(target, exc) from exc
        return target

    # --- what it is ----------------------------------------------------------------------------------------

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def resolved(self) -> Path:
        """What the frozen study resolved to: its search space's content and its timing protocol."""
        return self.root / "resolved.yaml"

    def exists(self) -> bool:
        return self.root.is_dir()

    def inside(self, path: Path) -> Path:
        """`path` resolved (symlinks followed), or an error when that leaves the study folder: a path derived from
        user input (a trial id) must never read or write elsewhere."""
        resolved, root = Path(path).resolve(), self.root.resolve()
        if not resolved.is_relative_to(root):
            raise SrSearchError(f"{path} resolves to {resolved}, outside the study directory {root}; refusing to "
                                f"use it")
        return resolved

    def require(self) -> StudyDir:
        """Self, or an error naming the path when there is no study directory there."""
        if not self.root.is_dir():
            raise SrSearchError(f"no study directory at {self.root}")
        return self

    def frozen(self) -> FrozenStudy:
        """What this folder says about its study, read once through the bounded YAML loader (`FrozenStudy`)."""
        return FrozenStudy.read(self)


    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Hold the study folder for this driver: an OS lock (`flock`) on `.lock`, released by the OS when the
        process ends however it ends, so a killed driver never leaves it stuck. A second driver gets an error naming
        the holder's pid and host at once."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_file, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _read_holder(handle.read())
                raise SrSearchError(f"study directory {self.root} is in use by another sr-search launch ({holder}); "
                                    f"wait for it to finish (sr-search status {self.root}), or use another --out"
                                    ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock


@dataclass(frozen=True)
class FrozenStudy:
    """A study folder's own account of its study: `study.yaml` (frozen when it started) and `resolved.yaml` (what
    it resolved to), the one reader every command uses. Both go through the bounded YAML loader, so a copied
    folder whose file is an alias bomb, or not a mapping, is refused naming the file (and line), by every command
    alike. A folder without `study.yaml` (rows copied alone) reads as the defaults, with `found` False."""

    name: str
    mode: str
    objectives: dict[str, str]
    #: an ablation's factors as its file lists them (None: a search, or none listed)
    factors: dict[str, Any] | None
    #: the timing protocol: as resolved (a mapping) when the folder has resolved.yaml, else as the study names it
    protocol: Any
    #: the block modules the search space loaded (`block_modules`, as resolved when the study started)
    block_modules: tuple[str, ...]
    found: bool
    #: the files as read (the study's every key; the resolved space and protocol), for what the fields above omit
    study: Mapping[str, Any] = field(default_factory=dict, repr=False)
    resolved: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, folder: StudyDir) -> FrozenStudy:
        study = _mapping(folder.study_file)
        resolved = _mapping(folder.resolved)
        objectives = study.get("objectives")
        factors = study.get("factors")
        space = resolved.get("space") if isinstance(resolved.get("space"), Mapping) else {}
        return cls(
            name=str(study.get("name") or folder.root.name), mode=str(study.get("mode") or "search"),
            objectives=dict(objectives) if isinstance(objectives, Mapping) and objectives else dict(DEFAULT_OBJECTIVES),
            factors=dict(factors) if isinstance(factors, Mapping) and factors else None,
            protocol=resolved.get("protocol") or study.get("timing", "auto"),
            block_modules=tuple(str(ref) for ref in space.get("block_modules") or ()),
            found=folder.study_file.exists(), study=study, resolved=resolved)


def _mapping(path: Path) -> dict[str, Any]:
    """A frozen YAML file of a study folder as a mapping ({} when it is absent), through the bounded loader."""
    if not path.exists():
        return {}
    data = load_bounded(path.read_text(encoding="utf-8"), path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SrSearchError(f"{path}: a study folder's {path.name} must be a mapping of key: value, got "
                            f"{type(data).__name__}")
    return dict(data)


def _read_holder(text: str) -> str:
    try:
        info = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on host {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def atomic_write(path: Path, write: Callable[[Path], None], durable: bool = True) -> Path:
    """Write `path` through a temporary file in its folder, flushed to disk, and an atomic rename, so readers (and a
    machine that lost power) see the old or the new file, never half of one; the file gets the permissions the umask
    gives (a lab's shared group can read results). A failure (a full disk) names the path and leaves no temporary
    file behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise StudyWriteError(path, exc) from exc
    try:
        write(Path(tmp))
        if durable:  # `durable=False`: a display file (progress.json) whose loss at a power cut costs nothing
            _flush_to_disk(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StudyWriteError(path, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _flush_to_disk(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normalize_trial_id(text: str) -> str:
    """A trial id as a user types it (`7`, `0007`, `00007`) in the runner's form (`0007`); anything but digits is
    refused (`check_trial_id`)."""
    if isinstance(text, str) and re.fullmatch(r"[0-9]{1,12}", text):
        return f"{int(text):04d}"
    return check_trial_id(text)


def check_trial_id(trial_id: str) -> str:
    """A trial id as the runner writes them (digits only), so no id can point outside the study folder."""
    if not isinstance(trial_id, str) or not TRIAL_ID.fullmatch(trial_id):
        raise SrSearchError(f"trial id {trial_id!r} is not a trial id of this tool (four or more digits, e.g. 0007)")
    return trial_id
