"""Where a study's trial time went, from the rows' time columns: active training, data (preparing or mapping the
images, cutting and feeding batches), validation, deployment check, timing; and, apart, the time trials spent
paused between rung segments. `status` and the report print one line of it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

#: the active parts of a trial's time, in the order they are shown
ACTIVE = {"train_seconds": "training", "data_seconds": "data", "validate_seconds": "validation",
          "deploy_seconds": "deploy check", "timing_seconds": "timing"}
PAUSED = "paused_seconds"
COLUMNS = (*ACTIVE, PAUSED)


def totals(columns: Mapping[str, Iterable[Any]]) -> dict[str, float]:
    """The sum of each time column over the rows (missing and non-finite values count as 0: rows written before
    these columns existed, trials that never reached a stage)."""
    out = {}
    for name in COLUMNS:
        values = columns.get(name, ())
        out[name] = float(sum(v for v in values if isinstance(v, (int, float)) and math.isfinite(v)))
    return out


def shares_line(total: Mapping[str, float]) -> str | None:
    """'trial time 1234 s: training 61%, data 9%, ...; paused 300 s between rung segments', or None when no row
    has time columns."""
    active = sum(total.get(name, 0.0) for name in ACTIVE)
    if active <= 0:
        return None
    parts = ", ".join(f"{label} {100 * total.get(name, 0.0) / active:.0f}%" for name, label in ACTIVE.items())
    line = f"trial time {_duration(active)}: {parts}"
    paused = total.get(PAUSED, 0.0)
    if paused > 0:
        line += f"; paused {_duration(paused)} between rung segments"
    return line


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
