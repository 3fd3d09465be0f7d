"""The effects figure: every level's change vs the base on one shared axis, so a 0.04 dB effect looks 20 times
smaller than a 0.8 dB one; 95% interval bars, the noise band shaded, levels in the study file's order, the base
marked, verdicts by colour and written out at the right."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .effects_view import noise_band
from .figures import _figure, _style
from .tables import LABELS, UNITS

__all__ = ["VERDICT_COLORS", "plot_effects"]

VERDICT_COLORS = {"better": "#1a7f37", "worse": "#c0392b", "higher": "#1f5fa8", "lower": "#8e44ad",
                  "not distinguishable": "#7f7f7f", "unknown": "#b0b0b0"}
#: width of the figure: drawn at its size (110 dpi) it fits the report's column without being scaled down
WIDTH_IN = 8.6


def plot_effects(effects: pd.DataFrame, objective: str = "psnr_y") -> Figure | None:
    """Δ `objective` vs the base for every level (rows grouped by factor; the base's level a diamond at 0).

    None when `effects` has no row for `objective`. Levels without an interval are drawn hollow.
    """
    rows = effects[effects["objective"] == objective].reset_index(drop=True)
    if rows.empty:
        return None
    unit = UNITS.get(objective, "")
    label = LABELS.get(objective, objective).split(" (")[0]
    band = noise_band(effects, objective)
    y = _positions(rows)
    with _style():
        fig = _figure(WIDTH_IN, 1.5 + 0.3 * (max(y.values(), default=0) + 1))
        ax = fig.subplots()
        if math.isfinite(band) and band > 0:
            ax.axvspan(-band, band, color="#f2d7a0", alpha=0.55, lw=0, zorder=0)
        ax.axvline(0, color="0.25", lw=1.0, zorder=1)
        for i, r in rows.iterrows():
            _draw_level(ax, r, y[i])
        _factor_rules(ax, rows, y)
        ax.set_yticks(list(y.values()), [_tick(r) for _, r in rows.iterrows()])
        ax.set_ylim(max(y.values()) + 0.7, -0.7)
        ax.tick_params(axis="y", labelsize=9.5, length=0)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"Δ {label} vs the base ({unit})" if unit else f"Δ {label} vs the base")
        seeds = _seed_text(rows)
        ax.set_title(f"Effect of each level on {label}, relative to the base: mean and 95% interval\n{seeds}",
                     loc="left")
        fig.legend(handles=_legend(rows, band, unit), loc="outside lower left", ncol=2, frameon=False, fontsize=8.5)
    return fig


def _positions(rows: pd.DataFrame) -> dict[int, float]:
    """A row per level, a gap between factors."""
    out, at, last = {}, 0.0, None
    for i, factor in rows["factor"].items():
        if last is not None and factor != last:
            at += 0.6
        out[i] = at
        at += 1.0
        last = factor
    return out


def _draw_level(ax, r: pd.Series, y: float) -> None:
    if r["is_base"]:
        ax.plot([0], [y], marker="D", ms=7, color="black", zorder=4, ls="none")
        ax.text(1.01, y, "base", transform=ax.get_yaxis_transform(), va="center", fontsize=8.5, color="0.2")
        return
    color = VERDICT_COLORS.get(r["verdict"], "#7f7f7f")
    effect, low, high = float(r["effect"]), float(r["ci_low"]), float(r["ci_high"])
    if not math.isfinite(effect):
        ax.text(1.01, y, "no result", transform=ax.get_yaxis_transform(), va="center", fontsize=8.5, color="0.4")
        return
    if math.isfinite(low) and math.isfinite(high):
        ax.plot([low, high], [y, y], color=color, lw=2.2, solid_capstyle="butt", zorder=2)
        ax.plot([low, high], [y, y], ls="none", marker="|", ms=9, mew=1.6, color=color, zorder=2)
        ax.plot([effect], [y], marker="o", ms=7, color=color, zorder=3, ls="none")
    else:
        ax.plot([effect], [y], marker="o", ms=7, mfc="white", mec=color, mew=1.6, zorder=3, ls="none")
    text = f"{effect:+.3f}  {r['verdict']}" if abs(effect) < 100 else f"{effect:+,.0f}  {r['verdict']}"
    ax.text(1.01, y, text, transform=ax.get_yaxis_transform(), va="center", fontsize=8.5, color=color)


def _factor_rules(ax, rows: pd.DataFrame, y: dict[int, float]) -> None:
    """A thin line between factors, so the groups read apart."""
    last = None
    for i, factor in rows["factor"].items():
        if last is not None and factor != last:
            ax.axhline(y[i] - 0.8, color="0.85", lw=0.8, zorder=0)
        last = factor


def _tick(r: pd.Series) -> str:
    text = f"{r['factor']} = {r['level_text']}"
    if len(text) > 34:
        text = text[:33] + "…"
    return f"{text}  (base)" if r["is_base"] else text


def _seed_text(rows: pd.DataFrame) -> str:
    variants = rows[~rows["is_base"].astype(bool)]
    k = int(rows["base_seeds"].max()) if len(rows) else 0
    if variants.empty:
        return f"the base: {k} seed" + ("" if k == 1 else "s")
    low, high = int(variants["n_seeds"].min()), int(variants["n_seeds"].max())
    seeds = f"{low} seed" + ("" if low == high == 1 else "s") if low == high else f"{low}-{high} seeds"
    return f"{seeds} per level; the base: {k} seed" + ("" if k == 1 else "s")


def _legend(rows: pd.DataFrame, band: float, unit: str) -> list:
    handles = [Line2D([], [], ls="none", marker="D", ms=7, color="black", label="base (Δ = 0)")]
    for verdict in dict.fromkeys(rows.loc[~rows["is_base"].astype(bool), "verdict"]):
        if verdict in VERDICT_COLORS:
            handles.append(Line2D([], [], color=VERDICT_COLORS[verdict], marker="o", ms=6, lw=2, label=verdict))
    if math.isfinite(band) and band > 0:
        k = int(rows["base_seeds"].max())
        text = f"noise band ±{band:.3g} {unit}: one run vs the base (95%, base spread, {k} seeds)"
        handles.append(Patch(color="#f2d7a0", alpha=0.8, label=text))
    return handles
