"""The report's figures: the PSNR/throughput front, the ablation panels and the hypervolume history.

Trials timed on a shared device are drawn with their own marker and a front that rests on any such timing says
so in its title. Figures are drawn on bare `matplotlib.figure.Figure` objects with the Agg canvas, so no display
and no pyplot global state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .pareto import (
    _natural_order, counted_mask, eligible_mask, hypervolume_history, hypervolume_reference, pareto_front,
)
from .quality_flags import flags
from .tables import (
    LABELS, PLOT_OBJECTIVES, UNITS, _ablation_rows, _exclusive, _level_text, _missing, _number, ablation_table,
)

__all__ = ["LOG_DECADES", "plot_front", "plot_ablation", "plot_hypervolume"]

#: Throughput spanning more than this many decades is drawn on a log axis.
LOG_DECADES = 1.5
_MARKERS = {"exclusive timing": "o", "non-exclusive timing": "X"}
_STYLE = {"axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5}


def plot_front(df: pd.DataFrame) -> Figure | None:
    """PSNR-Y vs throughput of the complete trials, coloured by block, with the front as a step line.

    Reference points: the paper baselines the study names (rows with a ``baseline`` name) are labelled, and
    bicubic upsampling's PSNR-Y (``bicubic_psnr_y``, no network to time) is a dashed line. Trials whose timing was
    not exclusive get an 'X' marker; log x-axis when throughput spans more than 1.5 decades.
    None when no complete trial has both values.
    """
    if not set(PLOT_OBJECTIVES) <= set(df.columns):
        return None
    data = df[eligible_mask(df, PLOT_OBJECTIVES)].copy()
    if data.empty:
        return None
    data["block"] = data["block"].astype(str) if "block" in data.columns else "?"
    data["timing"] = np.where(_exclusive(data), "exclusive timing", "non-exclusive timing")
    front = pareto_front(data, PLOT_OBJECTIVES).sort_values("throughput", kind="stable")
    blocks = sorted(data["block"].unique())
    palette = dict(zip(blocks, sns.color_palette("colorblind", len(blocks)), strict=True))

    with _style():
        fig = _figure(7.8, 5.0)
        ax = fig.subplots()
        sns.scatterplot(
            data=data, x="throughput", y="psnr_y", hue="block", hue_order=blocks, palette=palette,
            style="timing", markers=_MARKERS, s=55 if len(data) <= 300 else 22,
            alpha=0.85 if len(data) <= 300 else 0.6, legend=False, ax=ax, zorder=3,
        )
        ax.step(front["throughput"], front["psnr_y"], where="pre", color="black", lw=1.3, zorder=2)
        ax.scatter(front["throughput"], front["psnr_y"], s=150 if len(data) <= 300 else 80,
                   facecolors="none", edgecolors="black",
                   lw=1.1, zorder=4)
        baselines = _baselines(data)
        for _, row in baselines.iterrows():
            ax.annotate(
                str(row["baseline"]), (row["throughput"], row["psnr_y"]), xytext=(7, -12),
                textcoords="offset points", fontsize=8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "alpha": 0.85}, zorder=5,
            )
        ax.scatter(baselines["throughput"], baselines["psnr_y"], marker="D", s=110, facecolors="none",
                   edgecolors="0.25", lw=1.2, zorder=4)
        pruned = _pruned(df)
        if len(pruned):  # stopped early: one greyed cloud at the quality they had when stopped (their rungs are
            # named in the legend; a text label per trial was unreadable, and 150 s to draw, at 50,000 trials)
            ax.scatter(pruned["throughput"], pruned["rung_psnr_y"], s=28 if len(pruned) <= 300 else 10, color="0.7",
                       marker="v", alpha=0.9 if len(pruned) <= 300 else 0.35, lw=0, zorder=2,
                       rasterized=len(pruned) > 2000)
        marked = flags(data)
        collapsed = data[marked["collapsed"]]  # a defect: marked; below bicubic: drawn as any other trial
        bicubic = _bicubic(data)
        if len(collapsed):
            _draw_collapsed(ax, collapsed, data[~marked["collapsed"]], pruned, bicubic)
        if bicubic is not None:
            ax.axhline(bicubic, color="0.35", ls="--", lw=1.1, zorder=1)
            ax.annotate(f"bicubic {bicubic:.3f} dB", (0.01, bicubic), xycoords=("axes fraction", "data"),
                        xytext=(0, 4), textcoords="offset points", fontsize=8.5, color="0.3")

        throughput = data["throughput"].to_numpy(dtype=float)
        if throughput.min() > 0 and math.log10(throughput.max() / throughput.min()) > LOG_DECADES:
            ax.set_xscale("log")
        ax.set_xlabel(LABELS["throughput"])
        ax.set_ylabel(LABELS["psnr_y"])
        honest = "" if _exclusive(front).all() else " (non-exclusive timings)"
        ax.set_title(
            f"PSNR-Y vs throughput: Pareto front{honest}\n"
            f"{_plural(len(data), 'complete trial')}, {len(front)} on the front; {_timing_summary(data)}"
        )
        handles = [_handle("o", palette[b], b) for b in blocks]
        handles += [_handle(m, "0.45", name) for name, m in _MARKERS.items() if (data["timing"] == name).any()]
        handles.append(Line2D([], [], color="black", lw=1.3, marker="o", mfc="none", ms=10, label="Pareto front"))
        if len(baselines):
            handles.append(_handle("D", "none", "paper baseline", edge="0.25"))
        if bicubic is not None:
            handles.append(Line2D([], [], color="0.35", ls="--", lw=1.1, label="bicubic (reference)"))
        if len(pruned):
            handles.append(_handle("v", "0.7", "stopped early (PSNR-Y at its rung)"))
            handles.append(Line2D([], [], lw=0, label=_rungs_text(pruned)))
        if len(collapsed):
            handles.append(Line2D([], [], color="#c0392b", marker="x", lw=0, ms=9, label="collapsed training"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _rungs_text(pruned: pd.DataFrame) -> str:
    """The pruned cloud in words: how many, stopped at which iterations."""
    its = pd.to_numeric(pruned["rung_iterations"], errors="coerce").dropna().astype(int) \
        if "rung_iterations" in pruned.columns else pd.Series(dtype=int)
    counts = its.value_counts().sort_index()
    where = ", ".join(f"{n} at {it:,} it" for it, n in counts.items()) if len(counts) <= 4 else \
        f"at {counts.index.min():,}-{counts.index.max():,} it"
    return f"  {_plural(len(pruned), 'trial')}" + (f": {where}" if where else "")


def _draw_collapsed(ax: Any, collapsed: pd.DataFrame, others: pd.DataFrame, pruned: pd.DataFrame,
                    bicubic: float | None) -> None:
    """Collapsed trainings as red crosses. One far below the rest (a collapse to 12 dB next to a front at 31 dB)
    would squash the front into a line: the axis then spans the other trials and bicubic, and such a cross sits on
    the bottom edge with its PSNR-Y written next to it."""
    values = [*others["psnr_y"], *(pruned["rung_psnr_y"] if len(pruned) else []),
              *([bicubic] if bicubic is not None else [])]
    values = [float(v) for v in values if np.isfinite(v)]
    low = high = None
    if values:
        span = max(max(values) - min(values), 0.5)
        low, high = min(values) - 0.15 * span, max(values) + 0.1 * span
    y = collapsed["psnr_y"].to_numpy(dtype=float)
    below = np.zeros(len(y), dtype=bool) if low is None else y < low
    ax.scatter(collapsed["throughput"], np.where(below, low if low is not None else y, y), s=120, marker="x",
               color="#c0392b", lw=1.6, zorder=5, clip_on=False)
    if below.any():
        ax.set_ylim(low, high)
        for throughput, value in zip(collapsed["throughput"][below], y[below], strict=True):
            ax.annotate(f"{value:.1f} dB", (throughput, low), xytext=(6, 4), textcoords="offset points",
                        fontsize=8, color="#c0392b")


def _pruned(df: pd.DataFrame) -> pd.DataFrame:
    """Trials stopped at a rung that have a rung PSNR and a throughput (never on a front)."""
    if "status" not in df.columns or "rung_psnr_y" not in df.columns or "throughput" not in df.columns:
        return df[:0]
    rows = df[df["status"].astype(str) == "pruned"]
    return rows[np.isfinite(pd.to_numeric(rows["rung_psnr_y"], errors="coerce"))
                & np.isfinite(pd.to_numeric(rows["throughput"], errors="coerce"))]


def plot_ablation(df: pd.DataFrame) -> Figure | None:
    """One panel per varied factor: PSNR-Y by level, mean and one standard deviation over seeds.

    None when the results hold no complete ablation trial (no ``factor`` values).
    """
    table = ablation_table(df)
    if table.empty:
        return None
    rows = _ablation_rows(df).copy()
    rows["level_text"] = rows["level"].map(_level_text) if "level" in rows.columns else "-"
    factors = list(dict.fromkeys(table["factor"]))
    ncols = min(len(factors), 3)
    nrows = math.ceil(len(factors) / ncols)
    with _style():
        fig = _figure(3.6 * ncols + 0.6, 3.3 * nrows + 0.6)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, factor in zip(axes, factors, strict=False):
            sub = rows[rows["factor"] == factor]
            order = table.loc[table["factor"] == factor, "level"].tolist()
            sns.pointplot(data=sub, x="level_text", y="psnr_y", order=order, errorbar="sd", capsize=0.12,
                          linestyle="none", marker="o", markersize=7, err_kws={"linewidth": 1.6},
                          color="C0", ax=ax)
            sns.stripplot(data=sub, x="level_text", y="psnr_y", order=order, color="0.3", size=4,
                          jitter=0.12, alpha=0.65, ax=ax, zorder=4)
            seeds = table.loc[table["factor"] == factor, "n_seeds"]
            ax.set_title(f"{factor} (seeds per level: {_span_text(seeds)})")
            ax.set_xlabel(str(factor))
            ax.set_ylabel(LABELS["psnr_y"])
            if max(len(str(level)) for level in order) > 8:
                ax.tick_params(axis="x", labelrotation=25)
        for ax in axes[len(factors):]:
            ax.set_visible(False)
        fig.suptitle("Ablation: mean ± 1 s.d. over seeds (grey dots: individual seeds)", fontsize=11)
    return fig


def plot_hypervolume(
    df: pd.DataFrame, objectives: Mapping[str, str], reference: Mapping[str, float] | None = None
) -> Figure | None:
    """Hypervolume of the front after each trial (trial_id order), against a stated reference, as a step curve: it
    changes only at a trial that enlarges the front. Trials the hypervolume does not count (`pareto.counted_mask`:
    pruned, failed, infeasible, below bicubic, collapsed) are drawn as open grey markers; the axis shows the whole
    curve with a margin and whole trial numbers only. `reference` defaults to `pareto.hypervolume_reference`'s.

    None unless there are exactly two objectives and at least one eligible trial.
    """
    objectives = dict(objectives)
    if len(objectives) != 2 or not eligible_mask(df, objectives).any() or "trial_id" not in df.columns:
        return None
    reference = dict(reference or hypervolume_reference(df, objectives).values)
    history = hypervolume_history(df, objectives, reference)
    counted = counted_mask(df, objectives).to_numpy()[_natural_order(df["trial_id"])]
    trials, volume = history["trial"].to_numpy(), history["hypervolume"].to_numpy(dtype=float)
    units = " × ".join(UNITS.get(name, name) for name in objectives)
    top = float(volume.max()) if len(volume) else 0.0
    with _style():
        fig = _figure(6.4, 3.8)
        ax = fig.subplots()
        ax.step(np.append(trials, trials[-1] + 0.5), np.append(volume, volume[-1]), where="post", color="C0", lw=1.8,
                zorder=2)
        size = 5 if len(trials) <= 60 else 2
        ax.plot(trials[counted], volume[counted], "o", color="C0", ms=size, zorder=3, label="counted trial")
        if (~counted).any():
            ax.plot(trials[~counted], volume[~counted], "o", mfc="white", mec="0.6", ms=size, zorder=3,
                    label="not counted (pruned, failed, below bicubic or collapsed)")
            ax.legend(loc="best", frameon=True, framealpha=0.9)
        ax.set_xlim(0.5, trials[-1] + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
        if top <= 0:
            ax.text(0.5, 0.5, "no counted trial beats the reference point", transform=ax.transAxes, ha="center",
                    va="center", color="0.4")
        ax.set_xlabel("trials (in trial_id order)")
        ax.set_ylabel(f"hypervolume ({units})")
        ref_text = ", ".join(f"{name} = {_number(reference[name])} {UNITS.get(name, '')}".rstrip()
                             for name in objectives)
        ax.set_title(f"Hypervolume of the front over trials\nreference point: {ref_text}")
    return fig


# --- helpers ---------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style():
    """Seaborn's look for the figures of this call only (the caller's rcParams are restored)."""
    import matplotlib as mpl

    return mpl.rc_context({**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"), **_STYLE})


def _handle(marker: str, color: Any, label: str, edge: Any = None) -> Line2D:
    return Line2D([], [], ls="none", marker=marker, ms=8, mfc=color, mec=edge or color, label=label)


def _baselines(df: pd.DataFrame) -> pd.DataFrame:
    if "baseline" not in df.columns:
        return df.iloc[:0]
    named = df["baseline"].map(lambda v: not _missing(v) and bool(str(v).strip()))
    return df[named]


def _bicubic(df: pd.DataFrame) -> float | None:
    """Bicubic's PSNR-Y on the validation sets (the same for every trial of a study; the median if not)."""
    if "bicubic_psnr_y" not in df.columns:
        return None
    values = pd.to_numeric(df["bicubic_psnr_y"], errors="coerce")
    values = values[np.isfinite(values)]
    return float(values.median()) if len(values) else None


def _timing_summary(df: pd.DataFrame) -> str:
    parts = []
    for column in ("timing_device", "timing_protocol", "timing_precision"):
        if column in df.columns:
            values = [str(v) for v in df[column].dropna().unique()]
            if values:
                parts.append(values[0] if len(values) == 1 else f"{len(values)} {column.split('_')[1]}s")
    return "timed on " + ", ".join(parts) if parts else "timing device not recorded"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _span_text(values: pd.Series) -> str:
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}-{high}"
