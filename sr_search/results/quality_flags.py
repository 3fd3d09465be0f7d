"""Two flags on a complete trial's quality, defined here and nowhere else: `below_bicubic` and `collapsed`.

They say different things and the report, the front table and `compare` keep them apart:

- **below_bicubic**: the deployed network's final PSNR-Y is under bicubic upsampling's on the same images
  (`psnr_gain < 0`). Normal early in training for a network whose global skip starts from nearest or bilinear
  upsampling: it is still a measurement of that candidate at that budget. Such a trial is kept on the front figure,
  greyed in tables and not counted in any hypervolume (the reference of PSNR-Y is bicubic itself).
- **collapsed**: the training went wrong, whatever bicubic does. Either the final PSNR-Y is more than
  `COLLAPSE_DROP_DB` below the PSNR-Y the same network had before its first step (`start_psnr_y`: training made it
  worse by a wide margin), or its output is near-constant: the spread (standard deviation) of its luma over the
  validation images is under `CONSTANT_SPREAD` of the ground truth's. The likely causes are a too-large step, a
  broken candidate or a diverging loss that stayed finite. A collapsed trial is a defect, not a result: the report
  shows it apart with the cause, and no hypervolume counts it.

The trial computes both (`row_flags`) and the row carries them as booleans. Rows written before these flags
existed (sr-search 0.1 and 0.2) have a `collapsed` column that meant "below bicubic" and no `below_bicubic` column;
`flags(df)` reads them as below_bicubic = psnr_gain < 0 and collapsed = False (they recorded neither the starting
quality nor the output spread), so an old study is not shown as a pile of defects.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["COLLAPSE_DROP_DB", "CONSTANT_SPREAD", "FLAGS", "collapse_cause", "flags", "is_below_bicubic",
           "is_collapsed", "row_flags"]

#: a training that ends this many dB (PSNR-Y) or more below where the same network started has collapsed
COLLAPSE_DROP_DB = 3.0
#: an output whose luma spread is under this fraction of the ground truth's is near-constant (collapsed)
CONSTANT_SPREAD = 0.2
#: the flag columns, in the order tables show them
FLAGS = ("below_bicubic", "collapsed")


def is_below_bicubic(psnr_y: float | None, bicubic_psnr_y: float | None) -> bool:
    """Final PSNR-Y under bicubic's on the same images (False when either is unknown)."""
    if not _finite(psnr_y) or not _finite(bicubic_psnr_y):
        return False
    return float(psnr_y) < float(bicubic_psnr_y)


def is_collapsed(psnr_y: float | None, start_psnr_y: float | None, spread: float | None) -> bool:
    """Ended `COLLAPSE_DROP_DB` or more below its own starting PSNR-Y, or produces a near-constant output
    (`spread` < `CONSTANT_SPREAD`). An unknown value counts as not flagged by its own test."""
    dropped = _finite(psnr_y) and _finite(start_psnr_y) and float(psnr_y) <= float(start_psnr_y) - COLLAPSE_DROP_DB
    flat = _finite(spread) and float(spread) < CONSTANT_SPREAD
    return bool(dropped or flat)


def row_flags(psnr_y: float | None, bicubic_psnr_y: float | None, start_psnr_y: float | None,
              spread: float | None) -> dict[str, bool]:
    """Both flags of one complete trial, as its row carries them."""
    return {"below_bicubic": is_below_bicubic(psnr_y, bicubic_psnr_y),
            "collapsed": is_collapsed(psnr_y, start_psnr_y, spread)}


def flags(df: pd.DataFrame) -> pd.DataFrame:
    """`below_bicubic` and `collapsed` of every row as booleans (False for rows that are not complete or lack the
    values). Rows without a `below_bicubic` value were written before the flags (module docstring): below_bicubic is
    derived from their PSNR-Y gain and they are never collapsed."""
    index = df.index
    complete = (df["status"].astype("string").eq("complete").fillna(False).astype(bool) if "status" in df.columns
                else pd.Series(True, index=index))
    written = df["below_bicubic"] if "below_bicubic" in df.columns else pd.Series(None, index=index, dtype=object)
    new = written.notna()
    gain = _numbers(df, "psnr_gain")
    if gain.isna().all() and {"psnr_y", "bicubic_psnr_y"} <= set(df.columns):
        gain = _numbers(df, "psnr_y") - _numbers(df, "bicubic_psnr_y")
    below = written.where(new, gain < 0).fillna(False).astype(bool)
    collapsed = (df["collapsed"].where(new, False) if "collapsed" in df.columns
                 else pd.Series(False, index=index)).fillna(False).astype(bool)
    return pd.DataFrame({"below_bicubic": below & complete, "collapsed": collapsed & complete}, index=index)


def collapse_cause(row: Any) -> str:
    """What a collapsed trial did, in words, from its row: the drop from its start or the flat output."""
    psnr, start = _get(row, "psnr_y"), _get(row, "start_psnr_y")
    if _finite(psnr) and _finite(start) and float(psnr) <= float(start) - COLLAPSE_DROP_DB:
        return (f"PSNR-Y fell from {float(start):.2f} dB before training to {float(psnr):.2f} dB "
                "(a too-large step or a diverging loss)")
    return "near-constant output (the network learned a flat image: a broken candidate or a too-large step)"


def _get(row: Any, key: str) -> Any:
    try:
        return row[key]
    except (KeyError, IndexError):
        return None


def _finite(value: Any) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _numbers(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index)
    return pd.to_numeric(df[column], errors="coerce").astype(float)
