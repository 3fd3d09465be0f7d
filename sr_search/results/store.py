"""Results: one parquet row per trial (DESIGN 4.4), written atomically, loaded as one DataFrame.

Each trial writes `trials/<trial_id>.parquet` (temp file + rename, so a crash never leaves half a row);
`results.parquet` is a consolidated copy. The per-trial files are the source of truth: `load_results` reads
them, so a killed driver loses no finished trial.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..errors import SrSearchError
from ..model.blocks import load_block_module
from ..model.spec import ArchSpec, spec_field_infos
from ..study.model import DEFAULT_OBJECTIVES
from .study_dir import StudyDir, atomic_write

STATUSES = ("complete", "infeasible", "failed", "pruned")

_STR, _INT, _F64, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
_TIME = pa.timestamp("us", tz="UTC")


def _spec_type(annotation: Any) -> pa.DataType:
    text = str(annotation)
    if "bool" in text:
        return _BOOL
    if "float" in text:
        return _F64
    if "int" in text and "Literal['" not in text:
        return _INT
    return _STR


#: Required columns and their types, ArchSpec fields excepted (`schema()` adds them, the registered families' too);
#: per-set metrics (`psnr_y_<set>`) and other extras are inferred.
COLUMNS: dict[str, pa.DataType] = {
    "study": _STR, "trial_id": _STR, "status": _STR, "error": _STR,
    "arch_json": _STR, "arch_key": _STR, "deploy_key": _STR,
    "baseline": _STR, "factor": _STR, "level": _STR,
    "params_train": _INT, "params_deploy": _INT, "macs_deploy": _INT,
    "psnr_y": _F64, "ssim_y": _F64, "bicubic_psnr_y": _F64, "psnr_gain": _F64, "collapsed": _BOOL,
    "train_iterations": _INT, "train_seconds": _F64, "final_loss": _F64, "val_curve": _STR,
    "rung": _INT, "rung_iterations": _INT, "rung_psnr_y": _F64, "rung_ssim_y": _F64, "rung_psnr_gain": _F64,
    "latency_ms": _F64, "latency_ms_p90": _F64, "latency_ms_mean": _F64, "throughput": _F64, "mpix_per_s": _F64,
    "timing_protocol": _STR, "timing_device": _STR, "timing_precision": _STR,
    "timing_exclusive": _BOOL, "timing_cached": _BOOL, "timing_retimed": _BOOL, "timing_node": _STR,
    "reparam_max_abs_err": _F64, "peak_mem_mb": _F64, "ntire_score": _F64, "ntire_esr_score": _F64,
    "ntire_esr_gflops": _F64,
    "constraint_violation": _F64,
    "seed": _INT, "started_at": _TIME, "finished_at": _TIME, "host": _STR, "node": _STR, "versions": _STR,
}
_SPEC_AFTER = "error"  # spec columns go right after the status columns, as in 0.1


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


def row_to_json(row: dict[str, Any]) -> str:
    """A row as JSON, to travel from a worker to the driver (timestamps as ISO 8601)."""
    return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()})


def row_from_json(text: str) -> dict[str, Any]:
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
        else:
            arrays.append(pa.array([value]))
        fields.append(pa.field(name, arrays[-1].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _atomic_write(table: pa.Table, path: Path) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_trial_row(study_dir: str | Path | StudyDir, row: dict[str, Any]) -> Path:
    """Write one trial's row atomically; replaces an earlier row of the same trial."""
    path = StudyDir(study_dir).trial_file(row["trial_id"])
    _atomic_write(_table(row), path)
    return path


def read_trial_row(study_dir: str | Path | StudyDir, trial_id: str) -> dict[str, Any] | None:
    path = StudyDir(study_dir).trial_file(trial_id)
    if not path.exists():
        return None
    return pq.read_table(path).to_pylist()[0]


def _trial_rows(where: StudyDir) -> pa.Table | None:
    """Every per-trial file as one table in trial-id order, with the rows' own column types (None: no file)."""
    files = sorted(where.trials.glob("*.parquet"))
    if not files:
        return None
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    return table.sort_by("trial_id")


def load_results(study_dir: str | Path | StudyDir) -> pd.DataFrame:
    """All trial rows of a study directory, ordered by trial id (an empty frame if none finished yet)."""
    where = StudyDir(study_dir).require()
    table = _trial_rows(where)
    if table is None:
        if where.results.exists():
            return pd.read_parquet(where.results)
        return pd.DataFrame({name: pd.Series(dtype=t.to_pandas_dtype()) for name, t in schema().items()})
    return table.to_pandas()


def consolidate(study_dir: str | Path | StudyDir) -> Path:
    """Write `results.parquet` from the per-trial files (atomically) and return its path.

    It is written from the rows' Arrow table, not through pandas: an integer column with a null (a family's field on
    another family's row, `train_iterations` of an infeasible trial) stays int64 and an all-null one keeps its type,
    where a pandas round trip made them double and null.
    """
    where = StudyDir(study_dir)
    table = _trial_rows(where.require())
    if table is None:
        table = pa.Table.from_pandas(load_results(where), preserve_index=False)
    _atomic_write(table, where.results)
    return where.results


def study_objectives(study_dir: str | Path | StudyDir) -> dict[str, str]:
    """The objectives of the study frozen in `study_dir` (the default objectives if it names none)."""
    frozen = StudyDir(study_dir).study_file
    if frozen.exists():
        data = yaml.safe_load(frozen.read_text()) or {}
        if isinstance(data.get("objectives"), dict):
            return data["objectives"]
    return dict(DEFAULT_OBJECTIVES)


def load_study_blocks(study_dir: str | Path | StudyDir) -> tuple[str, ...]:
    """Register the block families the study's search space named under `block_modules` (as resolved when the study
    started), so a process that never loaded the study file (`sr-search export`) can rebuild its candidates."""
    frozen = StudyDir(study_dir).resolved
    if not frozen.exists():
        return ()
    space = (yaml.safe_load(frozen.read_text()) or {}).get("space") or {}
    refs = tuple(space.get("block_modules") or ())
    for ref in refs:
        load_block_module(ref)
    return refs
