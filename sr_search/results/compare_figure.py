"""The figure of `sr-search compare`: every study's complete trials and its front on one pair of axes.

One colour per study; the front is a step line (the edge of what it dominates), dashed for a flagged study, whose
legend entry says what differs; the title states the shared hypervolume reference (drawn, it would stretch the
axes far from the points). A bare `Figure` on the Agg canvas: no display, no pyplot state.

It draws what `compare.Comparison` holds, described here as `Fronts` (the attributes it reads), so the arrow runs
one way: `compare` -> `compare_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .pareto import eligible_mask, pareto_front
from .tables import LABELS

__all__ = ["Fronts", "plot_fronts"]

#: an axis whose values span more than this many decades is drawn on a log scale
LOG_DECADES = 1.5
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


class StudyPoints(Protocol):
    """One compared study: its label and its rows."""

    label: str
    root: Path
    rows: pd.DataFrame


class Fronts(Protocol):
    """What the figure draws (`compare.Comparison` has it): the objectives, the shared reference, one row per study
    in `studies` (its `hypervolume`), the studies' rows, and per flagged study what differs."""

    objectives: dict[str, str]
    reference: dict[str, float]
    studies: pd.DataFrame
    flag_kinds: Mapping[str, Sequence[str]]
    data: Sequence[StudyPoints]


def plot_fronts(cmp: Fronts) -> Figure:
    """Quality (the first objective) up, the second objective across; with one objective, one column per study."""
    names = list(cmp.objectives)
    y_name = names[0]
    x_name = names[1] if len(names) > 1 else None
    fig = Figure(figsize=(8.0, 5.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    studies = cmp.studies.set_index("study")
    xs_all: list[float] = []
    for i, study in enumerate(cmp.data):
        colour = _COLOURS[i % len(_COLOURS)]
        rows = study.rows[eligible_mask(study.rows, cmp.objectives)]
        front = pareto_front(study.rows, cmp.objectives)
        x = rows[x_name].to_numpy(float) if x_name else np.full(len(rows), i, float)
        ax.scatter(x, rows[y_name], s=22, color=colour, alpha=0.35, lw=0)
        fx = front[x_name].to_numpy(float) if x_name else np.full(len(front), i, float)
        order = np.argsort(fx, kind="stable")
        flagged = cmp.flag_kinds.get(study.label)
        volume = studies.loc[study.label, "hypervolume"]
        label = study.label + ("" if math.isnan(volume) else f"  (HV {volume:.4g})")
        label += f"  FLAGGED: {', '.join(flagged)} differ{'s' if len(flagged) == 1 else ''}" if flagged else ""
        where = "pre" if x_name and cmp.objectives[x_name] == "max" else "post"
        ax.step(fx[order], front[y_name].to_numpy(float)[order], where=where, color=colour, lw=1.6,
                ls="--" if flagged else "-", label=label, marker="o", ms=6, mfc="white")
        xs_all += list(x)
    if x_name and _wide(xs_all):
        ax.set_xscale("log")
    if x_name:
        ax.set_xlabel(LABELS.get(x_name, x_name) + f" ({cmp.objectives[x_name]})")
    else:
        ax.set_xticks(range(len(cmp.data)), [s.label for s in cmp.data])
    ax.set_ylabel(LABELS.get(y_name, y_name) + f" ({cmp.objectives[y_name]})")
    extra = f" (front on all {len(names)} objectives)" if len(names) > 2 else ""
    ref = ", ".join(f"{n} {v:.4g}" for n, v in cmp.reference.items())
    ax.set_title(f"Fronts of {len(cmp.data)} studies{extra}\nhypervolume (HV) reference: {ref}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _wide(values: list[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and math.log10(max(finite) / min(finite)) > LOG_DECADES
