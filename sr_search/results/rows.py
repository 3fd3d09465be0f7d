"""A study's rows on disk, read and compacted with pyarrow only (no pandas, no torch): `store` builds the DataFrame
API on top of it, and `sr-search status` can count a stale study's rows without the heavy imports.

Each trial writes `trials/<trial_id>.parquet` (temp file + rename, so a crash never leaves half a row); the driver
compacts those loose files into parts named by a manifest (`parts`). A reader scans the parts and the loose files in
one multi-threaded dataset read. A file damaged on disk (truncated, corrupt, or not one row of its trial) is named in
a `StudyDataWarning`, moved aside (`StudyDir.set_aside`, never deleted) and left out, so its trials count as not
done and run again on resume; everything else loads.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..columns import STATUSES
from ..errors import StudyDataWarning, StudyWriteError
from . import parts
from .study_dir import StudyDir, atomic_write


def _atomic_write(table: pa.Table, path: Path) -> None:
    # page checksums: a bit flipped on disk is a damaged file (set aside), not a silently wrong PSNR
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))


def _wanted(columns: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(["trial_id", "status", *columns]))


def _read_table(where: StudyDir, columns: Sequence[str] | None = None) -> pa.Table | None:
    """Every readable row as one table in trial-id order, with the rows' own column types (None: no row): the
    compacted parts the manifest names and the loose row files, in one multi-threaded dataset scan; a trial in both
    keeps its loose row (the newer write), a trial in two parts the later part's. A damaged file is named in a
    `StudyDataWarning`, moved aside and left out (its trials run again on resume); a folder holding only
    `results.parquet` (copied without its trial files) is read from that."""
    manifest = parts.read_manifest(where)
    part_files = [parts.parts_dir(where) / p["file"] for p in manifest.parts]
    part_files = [f for f in part_files if f.exists()]
    loose = parts.loose_files(where)
    if part_files or loose:
        table = _scan(where, part_files, loose, columns)
    elif where.results.exists():
        table = _read(where, where.results, "results")
        if table is not None and columns is not None:
            table = table.select([c for c in _wanted(columns) if c in table.column_names])
    else:
        table = None
    if table is None or table.num_rows == 0:
        return None
    return _in_id_order(table)


def _scan(where: StudyDir, part_files: list[Path], loose: list[Path], columns: Sequence[str] | None) -> pa.Table | None:
    """The parts in one multi-threaded dataset scan (later parts win), the loose files each read on its own by a
    thread pool (a dataset over thousands of one-row files is slower than that) and checked, loose over parts."""
    tables = []
    part_table = _scan_parts(where, part_files, columns) if part_files else None
    loose_tables = _read_loose(where, loose, columns)
    if part_table is not None and loose_tables:
        ids = pa.array([t.column("trial_id")[0].as_py() for t in loose_tables], pa.large_string())
        ids = ids.cast(part_table.schema.field("trial_id").type)
        part_table = part_table.filter(pc.invert(pc.is_in(part_table.column("trial_id"), value_set=ids)))
    if part_table is not None:
        tables.append(part_table)
    tables += loose_tables
    if not tables:
        return None
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    return table.combine_chunks()


def _scan_parts(where: StudyDir, part_files: list[Path], columns: Sequence[str] | None) -> pa.Table | None:
    schemas, readable = [], []
    for path in part_files:
        found = _schema(path)
        if isinstance(found, pa.Schema) and not {"trial_id", "status"} <= set(found.names):
            found = "it has no trial_id or status column"
        if isinstance(found, pa.Schema):
            schemas.append(found)
            readable.append(path)
        elif found is not None:
            _set_aside(where, path, found, _then(path, part_files))
    if not readable:
        return None
    import pyarrow.dataset as ds  # here: it loads pandas, which a folder of loose rows (status) does without

    unified = pa.unify_schemas(schemas, promote_options="permissive")
    names = unified.names if columns is None else [c for c in _wanted(columns) if c in unified.names]
    options = ds.ParquetFragmentScanOptions(page_checksum_verification=True)
    try:
        dataset = ds.dataset([str(f) for f in readable], schema=unified,
                             format=ds.ParquetFileFormat(default_fragment_scan_options=options))
        table = dataset.to_table(columns=[*names, "__filename"], use_threads=True)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, PermissionError):
            raise
        table = _parts_one_by_one(where, readable, names)
        if table is None:
            return None
    return _latest_per_trial(where, table, readable)


def _guarded_read(read: Callable[[Path], Any], path: Path) -> Any:
    """`read(path)`, or a reason string for a damaged file, or None for one gone since it was listed (a permission
    problem is the user's to fix, so it is raised)."""
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise
    except (pa.ArrowException, OSError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()


def _schema(path: Path) -> pa.Schema | str | None:
    """A file's schema (only its footer): a reason string for a damaged file, None for one gone since listed."""
    return _guarded_read(pq.read_schema, path)


def _parts_one_by_one(where: StudyDir, part_files: list[Path], names: list[str]) -> pa.Table | None:
    """The slow path, taken only when the scan failed (a damaged part): every part on its own, so the damaged ones
    are named and set aside and the others load."""
    tables = []
    for path in part_files:
        table = _read(where, path, "part")
        if table is not None:
            table = table.select([c for c in names if c in table.column_names])
            tables.append(table.append_column("__filename", pa.array([str(path)] * table.num_rows)))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def _read_loose(where: StudyDir, loose: list[Path], columns: Sequence[str] | None) -> list[pa.Table]:
    """Each loose file's row, read in threads and checked (one row, of its own trial, with a known status; a file
    that is not that is set aside)."""
    def one(path: Path) -> pa.Table | str | None:
        return _guarded_read(lambda p: pq.read_table(p, page_checksum_verification=True), path)

    if len(loose) < 32:
        found = [one(f) for f in loose]
    else:
        with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
            found = list(pool.map(one, loose))
    tables = []
    for path, table in zip(loose, found, strict=True):
        why = table if isinstance(table, str) else None if table is None else _not_a_row(table, path.stem)
        if why is not None:
            _set_aside(where, path, why, _then(path, []))
        elif table is not None:
            tables.append(table if columns is None else
                          table.select([c for c in _wanted(columns) if c in table.column_names]))
    return tables


def _latest_per_trial(where: StudyDir, table: pa.Table, files: list[Path]) -> pa.Table:
    """One row per trial among the parts: a later part's over an earlier one's (a row of a status none of the
    known sets its part aside)."""
    sources = table.column("__filename").to_pylist()
    statuses = table.column("status").to_pylist()
    bad = {source for source, status in zip(sources, statuses, strict=True) if status not in STATUSES}
    for source in bad:
        _set_aside(where, Path(source), f"it holds a row whose status is none of {', '.join(STATUSES)}",
                   _then(Path(source), [Path(source)]))
    ids = table.column("trial_id").to_pylist()
    priority = {str(f): k for k, f in enumerate(files)}
    best: dict[str, int] = {}
    for k, (source, trial_id) in enumerate(zip(sources, ids, strict=True)):
        if source in bad:
            continue
        held = best.get(trial_id)
        if held is None or priority[source] >= priority[sources[held]]:
            best[trial_id] = k
    keep = sorted(best.values())
    table = table.drop_columns(["__filename"])
    return table if len(keep) == table.num_rows else table.take(pa.array(keep, type=pa.int64()))


def _in_id_order(table: pa.Table) -> pa.Table:
    ids = table.column("trial_id").to_pylist()
    order = sorted(range(len(ids)), key=lambda k: parts.id_key(str(ids[k])))
    return table if order == list(range(len(ids))) else table.take(pa.array(order, type=pa.int64()))


def _then(path: Path, part_files: list[Path]) -> str:
    if path in part_files:
        return "the trials of that part count as not done and run again on resume (launch --resume)"
    return f"trial {path.stem} counts as not done and runs again on resume (launch --resume)"


# --- compaction ----------------------------------------------------------------------------------------------

#: the driver compacts when this many loose row files have accumulated (`StudyRecorder`)
COMPACT_EVERY = 1000


def compact(study_dir: str | Path | StudyDir, min_rows: int = 1) -> int:
    """Move the loose row files into one new compacted part; returns how many rows moved (0 below `min_rows`).

    For the driver only (it holds the study folder). Each step leaves a folder that reads the same rows, so a kill
    at any point loses nothing and counts nothing twice: (1) the part is written under a new name (temporary file and
    rename; until the manifest names it, readers ignore it); (2) the manifest naming it replaces the old one (the
    commit point; a trial now in the part and still loose reads once, from its loose file); (3) the loose files
    that went into the part are removed, each only if unchanged since it was read (a row written again meanwhile
    stays, and wins). Parts and temporary files that no manifest names (left by a killed compaction) are removed
    first. A damaged loose file is set aside, as every reader does.
    """
    where = StudyDir(study_dir).require()
    manifest = parts.read_manifest(where)
    _remove_leftovers(where, manifest)
    loose = parts.loose_files(where)
    if not loose or len(loose) < min_rows:
        return 0
    stamps = {path: _stamp(path) for path in loose}
    table = _scan(where, [], loose, None)
    if table is None or table.num_rows == 0:
        return 0
    table = _in_id_order(table)
    ids = [str(v) for v in table.column("trial_id").to_pylist()]
    name = manifest.next_name(where)
    _atomic_write(table, parts.parts_dir(where) / name)
    manifest.parts.append({"file": name, "rows": table.num_rows, "trial_ids": ids})
    parts.write_manifest(where, manifest)
    for trial_id in ids:
        path = where.trial_file(trial_id)
        if path in stamps and _stamp(path) == stamps[path]:
            path.unlink(missing_ok=True)
    return table.num_rows


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _remove_leftovers(where: StudyDir, manifest: parts.Manifest) -> None:
    """Parts no manifest names and temporary files of killed writes (the driver is the only writer of the folder)."""
    named = {p["file"] for p in manifest.parts}
    folder = parts.parts_dir(where)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name not in named:
                path.unlink(missing_ok=True)
    if where.trials.is_dir():
        for path in where.trials.glob(".*.tmp"):
            path.unlink(missing_ok=True)


# --- damaged files -------------------------------------------------------------------------------------------


def _read_row(where: StudyDir, path: Path) -> pa.Table | None:
    """The one-row table of trial file `path`, or None (warned, moved aside) when it is not that."""
    return _read(where, path, "row")


def _read(where: StudyDir, path: Path, kind: str) -> pa.Table | None:
    try:
        table = pq.read_table(path, page_checksum_verification=True)
        why = _not_a_row(table, path.stem) if kind == "row" else None
    except (FileNotFoundError, PermissionError):
        if not path.exists():
            return None  # gone since it was listed
        raise
    except (pa.ArrowException, OSError) as exc:
        why = f"{type(exc).__name__}: {exc}".strip()
    if why is None:
        return table
    then = {"row": f"trial {path.stem} counts as not done and runs again on resume (launch --resume)",
            "part": "the trials of that part count as not done and run again on resume (launch --resume)"}.get(
                kind, "the trial files are the record; it is rewritten from them")
    _set_aside(where, path, why, then)
    return None


def _not_a_row(table: pa.Table, trial_id: str) -> str | None:
    """Why `table` is not the row of `trial_id` (None when it is)."""
    if table.num_rows != 1:
        return f"it holds {table.num_rows} rows, not one"
    if not {"trial_id", "status"} <= set(table.column_names):
        return "it has no trial_id or status column"
    return _not_a_row_of(1, table.column("trial_id")[0].as_py(), table.column("status")[0].as_py(), trial_id)


def _not_a_row_of(rows: int, row_id: Any, status: Any, trial_id: str) -> str | None:
    if rows != 1:
        return f"it holds {rows} rows, not one"
    if row_id != trial_id:
        return f"it holds the row of trial {row_id!r}"
    if status not in STATUSES:
        return f"its status {status!r} is none of {', '.join(STATUSES)}"
    return None


def _rows_held(where: StudyDir) -> int | None:
    """How many rows `results.parquet` holds (None when there is none, or it is damaged: then it is set aside)."""
    if not where.results.exists():
        return None
    try:
        return pq.read_metadata(where.results).num_rows
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, PermissionError):
            raise
        _set_aside(where, where.results, f"{type(exc).__name__}: {exc}".strip(),
                   "it is rewritten from the trial files")
        return None


def _set_aside(where: StudyDir, path: Path, why: str, then: str) -> None:
    try:
        done = f"moved to {where.set_aside(path)}"
    except StudyWriteError as exc:
        done = f"left where it is ({exc}) and skipped"
    warnings.warn(StudyDataWarning(f"{path} is unreadable ({why}): {done}; {then}"), stacklevel=4)


