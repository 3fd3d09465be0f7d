"""Where a study's rows are on disk: loose row files and compacted parts, named by a manifest. No pyarrow or pandas
here, so `sr-search status` can count rows from a directory listing and one small JSON file.

    <study>/trials/<id>.parquet          one row, written by the driver as the trial finishes (atomic rename)
    <study>/trials/parts/<n>.parquet     many rows, written by compaction (`store.compact`)
    <study>/trials/manifest.json         the parts that count, in order, each with its trial ids

The manifest is the commit point of a compaction: a part it does not name (a compaction killed before the manifest
was written) is ignored and later removed; a loose file whose trial is also in a part (a compaction killed before
it removed the loose files) wins over the part, so a row is never lost and never counted twice. Later parts win over
earlier ones, loose files over every part.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .study_dir import TRIAL_ID, StudyDir, atomic_write

MANIFEST_VERSION = 1


@dataclass
class Manifest:
    parts: list[dict] = field(default_factory=list)  # {"file": "000001.parquet", "rows": n, "trial_ids": [...]}

    def ids(self) -> set[str]:
        return {trial_id for part in self.parts for trial_id in part["trial_ids"]}

    def next_name(self, folder: StudyDir) -> str:
        used = [int(p["file"].split(".")[0]) for p in self.parts]
        on_disk = [int(p.name.split(".")[0]) for p in _listing(parts_dir(folder)) if p.name.split(".")[0].isdigit()]
        return f"{max([0, *used, *on_disk]) + 1:06d}.parquet"


def parts_dir(folder: StudyDir) -> Path:
    return folder.trials / "parts"


def manifest_path(folder: StudyDir) -> Path:
    return folder.trials / "manifest.json"


def read_manifest(folder: StudyDir) -> Manifest:
    """The manifest (empty when there is none: a 0.1 or 0.2 folder, or one never compacted). A damaged manifest is
    an error naming the file: the parts it named are the only copy of their rows."""
    from ..errors import SrSearchError

    path = manifest_path(folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Manifest()
    try:
        data = json.loads(text)
        parts = data["parts"]
        if not isinstance(parts, list) or not all(isinstance(p, dict) and isinstance(p.get("file"), str)
                                                  and isinstance(p.get("trial_ids"), list) for p in parts):
            raise ValueError("'parts' is not a list of {file, rows, trial_ids}")
    except (ValueError, KeyError, TypeError) as exc:
        raise SrSearchError(f"{path} is unreadable ({exc}); it names the compacted parts of the rows in "
                            f"{parts_dir(folder)}: restore it from a backup, or move the parts aside and run "
                            f"the missing trials again (launch --resume)") from None
    return Manifest(parts=list(parts))


def write_manifest(folder: StudyDir, manifest: Manifest) -> None:
    text = json.dumps({"version": MANIFEST_VERSION, "parts": manifest.parts}, separators=(",", ":"))
    atomic_write(manifest_path(folder), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def loose_files(folder: StudyDir) -> list[Path]:
    """The loose row files (`trials/<id>.parquet`, temporary files left out), in trial-id order."""
    files = [p for p in _listing(folder.trials) if p.name.endswith(".parquet") and not p.name.startswith(".")]
    return sorted(files, key=lambda p: id_key(p.stem))


def row_ids(folder: StudyDir) -> set[str]:
    """The trials that have a row, from the manifest and a listing of loose files: no row file is opened."""
    return read_manifest(folder).ids() | {p.stem for p in loose_files(folder)}


def id_key(trial_id: str) -> tuple[int, int, str]:
    """Trial ids in numeric order ('9999' before '10000'), whatever their width; anything else after them."""
    return (0, int(trial_id), trial_id) if TRIAL_ID.fullmatch(trial_id) else (1, 0, trial_id)


def _listing(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(e.path) for e in entries if e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
