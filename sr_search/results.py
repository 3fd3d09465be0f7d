"""Results: one parquet row per trial (DESIGN 4.4), written atomically, loaded as one DataFrame.

Each trial writes `trials/<trial_id>.parquet` (temp file + rename, so a crash never leaves half a row);
`results.parquet` is a consolidated copy. The per-trial files are the source of truth: `load_results` reads
them, so a killed driver loses no finished trial.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from .arch import ArchSpec
from .errors import SrSearchError

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


#: Required columns and their types; per-set metrics (`psnr_y_<set>`) and other extras are inferred.
SCHEMA: dict[str, pa.DataType] = {
    "study": _STR, "trial_id": _STR, "status": _STR, "error": _STR,
    **{name: _spec_type(field.annotation) for name, field in ArchSpec.model_fields.items()},
    "arch_json": _STR, "arch_key": _STR, "deploy_key": _STR,
    "baseline": _STR, "factor": _STR, "level": _STR,
    "params_train": _INT, "params_deploy": _INT, "macs_deploy": _INT,
    "psnr_y": _F64, "ssim_y": _F64, "bicubic_psnr_y": _F64, "psnr_gain": _F64,
    "train_iterations": _INT, "train_seconds": _F64, "final_loss": _F64,
    "latency_ms": _F64, "latency_ms_p90": _F64, "latency_ms_mean": _F64, "throughput": _F64, "mpix_per_s": _F64,
    "timing_protocol": _STR, "timing_device": _STR, "timing_precision": _STR,
    "timing_exclusive": _BOOL, "timing_cached": _BOOL, "timing_retimed": _BOOL,
    "reparam_max_abs_err": _F64, "peak_mem_mb": _F64, "ntire_score": _F64,
    "constraint_violation": _F64,
    "seed": _INT, "started_at": _TIME, "finished_at": _TIME, "host": _STR, "versions": _STR,
}


def spec_columns(spec: ArchSpec) -> dict[str, Any]:
    """Every ArchSpec field as its own column, plus the JSON and both keys."""
    return {**spec.model_dump(), "arch_json": spec.to_json(), "arch_key": spec.arch_key(),
            "deploy_key": spec.deploy_key()}


def _table(row: dict[str, Any]) -> pa.Table:
    unknown_status = row.get("status") not in STATUSES
    if unknown_status:
        raise ValueError(f"row status must be one of {STATUSES}, got {row.get('status')!r}")
    fields, arrays = [], []
    for name in [*SCHEMA, *(k for k in row if k not in SCHEMA)]:
        value = row.get(name)
        if name in SCHEMA:
            typ = SCHEMA[name]
            if typ == _STR and value is not None and not isinstance(value, str):
                value = str(value)
            arrays.append(pa.array([value], type=typ))
        else:
            arrays.append(pa.array([value]))
        fields.append(pa.field(name, arrays[-1].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _atomic_write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def trial_path(study_dir: Path, trial_id: str) -> Path:
    return Path(study_dir) / "trials" / f"{trial_id}.parquet"


def write_trial_row(study_dir: Path, row: dict[str, Any]) -> Path:
    """Write one trial's row atomically; replaces an earlier row of the same trial."""
    path = trial_path(study_dir, row["trial_id"])
    _atomic_write(_table(row), path)
    return path


def read_trial_row(study_dir: Path, trial_id: str) -> dict[str, Any] | None:
    path = trial_path(study_dir, trial_id)
    if not path.exists():
        return None
    return pq.read_table(path).to_pylist()[0]


def load_results(study_dir: str | Path) -> pd.DataFrame:
    """All trial rows of a study directory, ordered by trial id (an empty frame if none finished yet)."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise SrSearchError(f"no study directory at {study_dir}")
    files = sorted((study_dir / "trials").glob("*.parquet"))
    if not files:
        consolidated = study_dir / "results.parquet"
        if consolidated.exists():
            return pd.read_parquet(consolidated)
        return pd.DataFrame({name: pd.Series(dtype=t.to_pandas_dtype()) for name, t in SCHEMA.items()})
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="default")
    return table.to_pandas().sort_values("trial_id", kind="stable").reset_index(drop=True)


def consolidate(study_dir: str | Path) -> Path:
    """Write `results.parquet` from the per-trial files (atomically) and return its path."""
    study_dir = Path(study_dir)
    df = load_results(study_dir)
    path = study_dir / "results.parquet"
    _atomic_write(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def study_objectives(study_dir: str | Path) -> dict[str, str]:
    """The objectives of the study frozen in `study_dir` (psnr_y/throughput if it has none)."""
    frozen = Path(study_dir) / "study.yaml"
    if frozen.exists():
        data = yaml.safe_load(frozen.read_text()) or {}
        if isinstance(data.get("objectives"), dict):
            return data["objectives"]
    return {"psnr_y": "max", "throughput": "max"}
