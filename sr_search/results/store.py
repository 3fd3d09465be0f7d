"""Results: one parquet row per trial (docs/architecture.md, "Result columns"), written atomically, loaded as one
DataFrame.

Each trial writes `trials/<trial_id>.parquet` (temp file + rename, so a crash never leaves half a row); the driver
compacts them into parts named by a manifest (`rows.compact`, crash-safe at every step); `results.parquet` is a
consolidated copy. The row files and parts are the source of truth: `load_results` reads them in one dataset scan
(`rows`), so a killed driver loses no finished trial.

A row file damaged on disk (truncated, corrupt, or not one row of its trial) is named in a `StudyDataWarning`,
moved aside (`StudyDir.set_aside`, never deleted) and left out, so its trial counts as not done and runs again on
resume; everything else loads. `consolidate` never replaces `results.parquet` with fewer rows than it holds.
"""

from __future__ import annotations

import ast
import json
import math
import typing
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import CATALOG, SPEC_AFTER, STATUSES, TrialRow
from ..errors import SrSearchError, StudyDataWarning
from ..model.blocks import load_block_module
from ..model.spec import ArchSpec, spec_field_infos
from . import parts
from .rows import (  # noqa: F401 - the row files' reader and compaction, re-exported
    COMPACT_EVERY,
    _atomic_write,
    _read,
    _read_row,
    _read_table,
    _rows_held,
    _set_aside,
    _wanted,
    compact,
)
from .study_dir import StudyDir

# text as 0.1 wrote it (pandas strings are large_string in Arrow), so old and new files have one schema
_STR, _INT, _F64, _BOOL = pa.large_string(), pa.int64(), pa.float64(), pa.bool_()
_TIME = pa.timestamp("us", tz="UTC")
#: the catalog's Arrow type names (`sr_search.columns.ARROW_TYPES`) as pyarrow types
ARROW = {"large_string": _STR, "int64": _INT, "float64": _F64, "bool": _BOOL, "timestamp[us, tz=UTC]": _TIME}


def _spec_type(annotation: Any) -> pa.DataType:
    text = str(annotation)
    if "bool" in text:
        return _BOOL
    if "float" in text:
        return _F64
    if "int" in text and "Literal['" not in text:
        return _INT
    return _STR


#: Required columns and their types (the column catalog's fixed columns), ArchSpec fields excepted (`schema()` adds
#: them, the registered families' too); per-set metrics (`psnr_y_<set>`) and other extras are inferred.
COLUMNS: dict[str, pa.DataType] = {c.name: ARROW[c.arrow] for c in CATALOG if c.fixed}
#: a column written only when measured (`psnr_rgb`) keeps the catalog's type when it is there
_OPTIONAL: dict[str, pa.DataType] = {c.name: ARROW[c.arrow] for c in CATALOG if not c.fixed}
_SPEC_AFTER = SPEC_AFTER  # spec columns go right after the status columns, as in 0.1


def schema() -> dict[str, pa.DataType]:
    """Every known column and its type: the fixed ones with every ArchSpec field (common and every registered
    family's) after `error`."""
    spec = {name: _spec_type(info.annotation) for name, info in spec_field_infos().items()}
    out: dict[str, pa.DataType] = {}
    for name, typ in COLUMNS.items():
        out[name] = typ
        if name == _SPEC_AFTER:
            out.update(spec)
    return out


def spec_columns(spec: ArchSpec) -> dict[str, Any]:
    """Every ArchSpec field as its own column, plus the JSON and both keys."""
    return {**spec.model_dump(), "arch_json": spec.to_json(), "arch_key": spec.arch_key(),
            "deploy_key": spec.deploy_key()}


_TIMESTAMPS = ("started_at", "finished_at")


def row_to_json(row: TrialRow) -> str:
    """A row as JSON, to travel from a worker to the driver (timestamps as ISO 8601)."""
    return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()})


def row_from_json(text: str) -> TrialRow:
    row = json.loads(text)
    for name in _TIMESTAMPS:
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    return row


def _table(row: dict[str, Any]) -> pa.Table:
    unknown_status = row.get("status") not in STATUSES
    if unknown_status:
        raise ValueError(f"row status must be one of {STATUSES}, got {row.get('status')!r}")
    known = schema()
    fields, arrays = [], []
    for name in [*known, *(k for k in row if k not in known)]:
        value = row.get(name)
        if name in known:
            typ = known[name]
            if typ == _STR and value is not None and not isinstance(value, str):
                value = str(value)
            arrays.append(pa.array([value], type=typ))
        elif name in _OPTIONAL and value is not None:
            arrays.append(pa.array([value], type=_OPTIONAL[name]))
        else:
            arrays.append(pa.array([value]))
        fields.append(pa.field(name, arrays[-1].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_trial_row(study_dir: str | Path | StudyDir, row: TrialRow) -> Path:
    """Write one trial's row atomically; replaces an earlier row of the same trial."""
    path = StudyDir(study_dir).trial_file(row["trial_id"])
    _atomic_write(_table(row), path)
    return path


def read_trial_row(study_dir: str | Path | StudyDir, trial_id: str) -> TrialRow | None:
    """A trial's row, or None when it has none (or its file is damaged: then it is moved aside, with a warning).
    A loose row file wins over a compacted part (the newer write)."""
    where = StudyDir(study_dir)
    path = where.trial_file(trial_id)
    if path.exists():
        table = _read_row(where, path)
        return table.to_pylist()[0] if table is not None else None
    for part in reversed(parts.read_manifest(where).parts):  # the latest part holding it wins
        if trial_id in part["trial_ids"]:
            table = _read(where, parts.parts_dir(where) / part["file"], "part")
            if table is None:
                return None
            rows = table.filter(pc.equal(table.column("trial_id"), trial_id))
            return rows.to_pylist()[-1] if rows.num_rows else None
    return None


def load_results(study_dir: str | Path | StudyDir, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """All trial rows of a study directory, ordered by trial id (numerically: 9999 before 10000; an empty frame if
    none finished yet). `columns`: read only these (and `trial_id`, `status`), for a reader that needs a few.

    Read for analysis (`typed`): `scale`, `colors` and `unshuffle` are integers and each `level` is its factor's
    value (a number, bool, text or None); the files on disk keep their column types. Per-level effects and the
    base in every factor's group: `sr_search.ablation_effects(df)`.
    """
    return typed(_read_rows(StudyDir(study_dir).require(), columns))


def _read_rows(where: StudyDir, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows as stored (parquet types)."""
    table = _read_table(where, columns)
    if table is None:
        known = schema()
        names = known if columns is None else [c for c in _wanted(columns) if c in known]
        return pd.DataFrame({name: pd.Series(dtype=known[name].to_pandas_dtype()) for name in names})
    return table.to_pandas(self_destruct=True)


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with the types an analysis expects. Parquet stores the integer choices (`scale`, `unshuffle`, ...) and
    `level` as text, so that one column holds every factor's levels; here they become numbers and typed levels
    (read from the factor's own spec column, which holds the same value with its type), numeric as a column when
    every level is. A new frame; `df` is untouched."""
    out = df.copy()
    for name in _int_choice_fields():
        if name in out.columns and not pd.api.types.is_numeric_dtype(out[name]):
            values = pd.to_numeric(out[name], errors="coerce")
            out[name] = values.astype("int64") if values.notna().all() else values.astype("Int64")
    if "level" in out.columns and "factor" in out.columns and len(out):
        levels = pd.Series([_parse_level(v) for v in out["level"]], index=out.index, dtype=object)
        for factor in out["factor"].dropna().unique():
            if factor in out.columns and factor not in ("base", "factorial"):
                mask = (out["factor"] == factor).to_numpy()
                levels[mask] = [_plain(v) for v in out.loc[mask, factor]]
        out["level"] = levels.infer_objects()
    return out


def _int_choice_fields() -> list[str]:
    """Spec fields that are a choice of integers (Literal[2, 3, 4]): stored as text in parquet."""
    out = []
    for name, info in spec_field_infos().items():
        args = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
        if args and all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            out.append(name)
    return out


def _parse_level(level: Any) -> Any:
    """A level's text read as a value: a factorial's tuple of (factor, value) pairs; None for the base and rows of
    a search (a one-at-a-time level is read from its factor's own column instead)."""
    if not isinstance(level, str):
        return None if level is None or (isinstance(level, float) and math.isnan(level)) else level
    try:
        return ast.literal_eval(level)
    except (ValueError, SyntaxError):
        return level


def _plain(value: Any) -> Any:
    """A column's value as plain Python; NaN (a float column's null, e.g. frozen_bn: null) as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def consolidate(study_dir: str | Path | StudyDir) -> Path:
    """Write `results.parquet` from the per-trial files (atomically) and return its path.

    It is written from the rows' Arrow table, not through pandas: an integer column with a null (a family's field on
    another family's row, `train_iterations` of an infeasible trial) stays int64 and an all-null one keeps its type.
    It is never replaced by fewer rows than it holds (a row file lost or set aside): then it is kept, with a
    warning, until the missing trials have run again.
    """
    where = StudyDir(study_dir)
    table = _read_table(where.require())
    rows = 0 if table is None else table.num_rows
    held = _rows_held(where)
    if held is not None and rows < held:
        warnings.warn(StudyDataWarning(
            f"{where.results} keeps its {held} rows: the trial files hold {rows} (a row file was lost or set "
            f"aside); it is rewritten once the missing trials have run again (launch --resume)"), stacklevel=2)
        return where.results
    if table is None:
        table = pa.Table.from_pandas(_read_rows(where), preserve_index=False)
    _atomic_write(table, where.results)
    return where.results


def study_objectives(study_dir: str | Path | StudyDir) -> dict[str, str]:
    """The objectives of the study frozen in `study_dir` (the default objectives if it names none)."""
    return StudyDir(study_dir).frozen().objectives


def study_factors(study_dir: str | Path | StudyDir) -> dict[str, Any] | None:
    """The factors of the ablation frozen in `study_dir`, as its file lists them (None when there are none, or
    the frozen files cannot be read: the effects are then computed from the rows alone)."""
    try:
        return StudyDir(study_dir).frozen().factors
    except SrSearchError:
        return None


def load_study_blocks(study_dir: str | Path | StudyDir) -> tuple[str, ...]:
    """Register the block families the study's search space named under `block_modules` (as resolved when the study
    started), so a process that never loaded the study file (`sr-search export`) can rebuild its candidates."""
    refs = StudyDir(study_dir).frozen().block_modules
    for ref in refs:
        load_block_module(ref)
    return refs
