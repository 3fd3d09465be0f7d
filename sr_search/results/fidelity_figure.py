"""The fidelity figure: proxy and confirmed fronts on one axis, each candidate's move drawn as an arrow.

Quality (the fidelity's metric) against the study's first other objective (throughput unless it optimises another).
Hollow markers are the proxy values, filled ones the confirmed values (mean over seeds); each front is a step line.
Drawn on a bare `Figure` with the Agg canvas, like the report's other figures.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..columns import LABELS

__all__ = ["FidelityView", "plot_fidelity", "png_bytes"]

_PROXY, _CONFIRMED, _MOVED = "#8c8c8c", "#0072b2", "#d55e00"


class FidelityView(Protocol):
    """What the figure draws of a `fidelity.Fidelity` (described here, so the arrow runs one way: `fidelity` ->
    `fidelity_figure`)."""

    metric: str
    objectives: dict[str, str]
    proxy_iterations: int | None
    confirmed_iterations: int | None
    pairs: pd.DataFrame
    stats: dict[str, Any]
    kept: list[str]

    @property
    def proxy_front(self) -> Sequence[str]: ...


def plot_fidelity(fid: FidelityView) -> Figure | None:
    """The arrows figure, or None when there is nothing to draw (no candidate, or no second objective)."""
    others = [m for m in fid.objectives if m != fid.metric]
    if not len(fid.pairs) or not others:
        return None
    cost = others[0]
    x0 = fid.pairs[f"proxy_{cost}"].to_numpy(float)
    x1 = fid.pairs[f"confirmed_{cost}"].to_numpy(float)
    y0, y1 = fid.pairs["proxy"].to_numpy(float), fid.pairs["confirmed"].to_numpy(float)
    fig = Figure(figsize=(7.8, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    positive = np.concatenate([x0, x1])
    if (positive > 0).all() and positive.max() / positive.min() > 30:
        ax.set_xscale("log")
    moved = fid.pairs["rank_change"].fillna(0).to_numpy() != 0
    for i in range(len(x0)):
        ax.annotate("", xy=(x1[i], y1[i]), xytext=(x0[i], y0[i]), zorder=2,
                    arrowprops={"arrowstyle": "->", "lw": 1.1, "color": _MOVED if moved[i] else _PROXY,
                                "alpha": 0.8, "shrinkA": 3, "shrinkB": 3})
    ax.scatter(x0, y0, s=42, facecolors="none", edgecolors=_PROXY, zorder=3,
               label=f"proxy ({_iters(fid.proxy_iterations)})")
    ax.scatter(x1, y1, s=42, color=_CONFIRMED, zorder=4, label=f"confirmed ({_iters(fid.confirmed_iterations)})")
    for flag, xs, ys, color, style in (("proxy_front", x0, y0, _PROXY, "--"),
                                       ("confirmed_front", x1, y1, _CONFIRMED, "-")):
        on = fid.pairs[flag].to_numpy(bool)
        if on.any():
            order = np.argsort(xs[on])
            ax.step(xs[on][order], ys[on][order], where="pre" if fid.objectives[cost] == "max" else "post",
                    color=color, ls=style, lw=1.2, zorder=1, label=f"{flag.replace('_', ' ')}")
    names = [f"{t} {b}" if isinstance(b, str) and b else t
             for t, b in zip(fid.pairs["source_trial_id"], fid.pairs["baseline"])]
    for i, label in enumerate(names):
        ax.annotate(str(label), (x1[i], y1[i]), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#444")
    ax.set_xlabel(LABELS.get(cost, cost))
    ax.set_ylabel(LABELS.get(fid.metric, fid.metric))
    s = fid.stats
    tau = "n/a" if math.isnan(s["tau"]) else f"{s['tau']:.2f}"
    ax.set_title(f"Proxy vs confirmed: Kendall tau {tau}, {len(fid.kept)} of {len(fid.proxy_front)} front members kept")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _iters(value: int | None) -> str:
    return f"{value:,} iterations" if value else "?"
