"""The tables of a study report: the Pareto front and the ablation summary, and how their cells are written.

Shared by the HTML report (`report`), the figures (`figures`) and `sr-search pareto`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..columns import DEFAULT_OBJECTIVES, TrialStatus
from ..columns import LABELS as COLUMN_LABELS
from ..columns import UNITS as COLUMN_UNITS
from .pareto import knee_point, pareto_front

__all__ = ["PLOT_OBJECTIVES", "LABELS", "UNITS", "TABLE_COLUMNS", "front_table", "front_text", "ablation_table"]

#: The front the scatter draws, and the objectives used when the study does not name its own.
PLOT_OBJECTIVES = DEFAULT_OBJECTIVES
#: labels (with unit) and units of the result columns, from the column catalog
LABELS, UNITS = COLUMN_LABELS, COLUMN_UNITS
TABLE_COLUMNS = (
    "trial_id", "baseline", "block", "channels", "depth", "scale", "psnr_y", "ssim_y", "throughput",
    "latency_ms", "params_deploy", "macs_deploy", "timing_exclusive",
)


def front_table(df: pd.DataFrame, objectives: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The Pareto front as a display table (what `sr-search pareto DIR` prints), best first.

    Columns: the identifying and measured columns present in `df`, the block families' own fields that vary
    within the front (after `scale`), the objectives, and ``knee``
    (True on the knee point when there are two objectives).
    """
    objectives = dict(objectives or PLOT_OBJECTIVES)
    front = pareto_front(df, objectives)
    columns = [c for c in dict.fromkeys([*TABLE_COLUMNS[:6], *objectives, *TABLE_COLUMNS[6:]]) if c in df.columns]
    table = front[columns].copy()
    own = {k: v for k, v in family_field_columns(front).items() if k not in table.columns}
    for position, (name, values) in enumerate(own.items()):
        table.insert(sum(c in table.columns for c in TABLE_COLUMNS[:6]) + position, name,
                     pd.Series(values, index=table.index, dtype=object))  # 2 stays 2, not 2.0
    if len(objectives) == 2:
        knee_label = knee_point(front, objectives).name if len(front) else None
        table["knee"] = [label == knee_label for label in front.index]
    return table.reset_index(drop=True)


def family_field_columns(front: pd.DataFrame) -> dict[str, list[Any]]:
    """The block families' own fields (read from each row's `arch_json`, so a family whose module is not loaded
    here shows too) that vary within `front`: name -> one value per row (None on rows of other families). Front
    points of one family that differ only in its fields (DBB's branches) can then be told apart."""
    if "arch_json" not in front.columns or front.empty:
        return {}
    from ..model.spec import COMMON_FIELDS

    specs = []
    for text in front["arch_json"]:
        try:
            data = json.loads(text) if isinstance(text, str) else {}
        except ValueError:
            data = {}
        specs.append({k: v for k, v in data.items() if k not in COMMON_FIELDS} if isinstance(data, dict) else {})
    out = {}
    for name in dict.fromkeys(k for spec in specs for k in spec):
        values = [spec.get(name) for spec in specs]
        present = [json.dumps(v) for v in values if v is not None]
        if len(set(present)) > 1:
            out[name] = values
    return out


def front_text(df: pd.DataFrame, objectives: Mapping[str, str] | None = None) -> str:
    """`front_table` formatted for a terminal (PSNR to 3 decimals, counts with separators)."""
    table = front_table(df, objectives)
    if table.empty:
        names = ", ".join(objectives or PLOT_OBJECTIVES)
        return f"No front: no complete trial has finite values for {names}."
    shown = table.copy()
    for column in shown.columns:
        shown[column] = shown[column].map(lambda v, c=column: _cell(c, v))
    return shown.to_string(index=False)


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds of each (factor, level) of an ablation study, complete trials only.

    Empty when the results have no ``factor`` column or no complete ablation trial.
    """
    columns = ["factor", "level", "n_seeds", "psnr_y_mean", "psnr_y_std", "throughput_mean"]
    if "factor" not in df.columns or "psnr_y" not in df.columns:
        return pd.DataFrame(columns=columns)
    rows = _ablation_rows(df)
    records = []
    for factor in _in_order(rows["factor"]):
        sub = rows[rows["factor"] == factor]
        levels = sub["level"].map(_level_text) if "level" in sub.columns else pd.Series("-", index=sub.index)
        for level in _level_order(levels):
            cell = sub[levels == level]
            psnr = _numeric(cell, "psnr_y")
            records.append(
                {
                    "factor": factor,
                    "level": level,
                    "n_seeds": int(cell["seed"].nunique()) if "seed" in cell.columns else len(cell),
                    "psnr_y_mean": float(np.mean(psnr)),
                    "psnr_y_std": float(np.std(psnr, ddof=1)) if len(psnr) > 1 else float("nan"),
                    "throughput_mean": float(np.nanmean(_numeric(cell, "throughput")))
                    if "throughput" in cell.columns and np.isfinite(_numeric(cell, "throughput")).any()
                    else float("nan"),
                }
            )
    return pd.DataFrame.from_records(records, columns=columns)


# --- helpers ---------------------------------------------------------------------------------------


def _complete(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"].astype(str) == TrialStatus.COMPLETE]


def _numeric(df: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _exclusive(df: pd.DataFrame) -> pd.Series:
    """Only an explicit True counts: a missing flag is not evidence of an exclusive device."""
    if "timing_exclusive" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["timing_exclusive"].map(lambda v: v is True or (isinstance(v, np.bool_) and bool(v)))


def _cell(column: str, value: Any) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if column.startswith("ssim"):
            return f"{value:.4f}"
        if column.startswith("psnr") or column.endswith("_ms") or column.endswith("_std"):
            return f"{value:.3f}"
        if column.startswith(("params", "macs")) and float(value).is_integer():
            return f"{int(value):,}"
        return _number(value)
    return str(value)


def _number(value: float) -> str:
    value = float(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _ablation_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Complete ablation rows, with the base variant repeated in every one-at-a-time factor as that factor's
    reference level (e.g. `branches = 2 (base)`), so each panel compares the levels with the base."""
    rows = _complete(df)
    rows = rows[rows["factor"].notna() & np.isfinite(_numeric(rows, "psnr_y"))]
    base = rows[rows["factor"] == "base"]
    if base.empty or "level" not in rows.columns:
        return rows
    varied = [f for f in _in_order(rows["factor"]) if f not in ("base", "factorial") and f in rows.columns]
    copies = [base.assign(factor=f, level=f"{_level_text(base[f].iloc[0])} (base)") for f in varied]
    return pd.concat([*copies, rows[rows["factor"] != "base"]])  # the base first, as study files list it


def _level_text(value: Any) -> str:
    if _missing(value):
        return "none"
    if isinstance(value, str):  # levels are stored as text: "4.0" and 4.0 read the same
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _level_order(levels: pd.Series) -> list[str]:
    """Numeric levels in numeric order; otherwise the order they first appear (the grid's order)."""
    unique = list(dict.fromkeys(levels))
    try:
        return sorted(unique, key=lambda level: float(str(level).removesuffix(" (base)")))
    except ValueError:
        return unique


def _in_order(values: pd.Series) -> list:
    return list(dict.fromkeys(values.tolist()))

