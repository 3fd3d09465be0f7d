"""Figures and a self-contained HTML report of one study directory (`sr-search report STUDY_DIR`).

The report is honest about its data: trials timed on a shared device are drawn with their own
marker, a front that rests on any such timing says so in its title, and a study where nothing
completed gets a page listing why instead of a traceback. Figures are drawn on bare
`matplotlib.figure.Figure` objects with the Agg canvas, so no display and no pyplot global state.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .errors import SrSearchError
from .pareto import DIRECTIONS, default_reference, eligible_mask, hypervolume_history, knee_point, pareto_front

#: The front the scatter draws, and the objectives used when the study does not name its own.
PLOT_OBJECTIVES = {"psnr_y": "max", "throughput": "max"}
#: Throughput spanning more than this many decades is drawn on a log axis.
LOG_DECADES = 1.5
LABELS = {
    "psnr_y": "PSNR-Y (dB)",
    "ssim_y": "SSIM-Y",
    "throughput": "throughput (images/s)",
    "latency_ms": "latency (ms)",
    "latency_ms_p90": "latency p90 (ms)",
    "params_deploy": "parameters (deployed)",
    "macs_deploy": "MACs (deployed)",
    "ntire_score": "NTIRE23 score",
    "psnr_gain": "PSNR-Y gain over bicubic (dB)",
}
UNITS = {"psnr_y": "dB", "throughput": "images/s", "latency_ms": "ms", "psnr_gain": "dB"}
TABLE_COLUMNS = (
    "trial_id", "baseline", "block", "channels", "depth", "scale", "psnr_y", "ssim_y", "throughput",
    "latency_ms", "params_deploy", "macs_deploy", "timing_exclusive",
)
FIGURES = ("front.png", "ablation.png", "hypervolume.png")
_MARKERS = {"exclusive timing": "o", "non-exclusive timing": "X"}
_STYLE = {"axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5}


# --- tables ----------------------------------------------------------------------------------------


def front_table(df: pd.DataFrame, objectives: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The Pareto front as a display table (what `sr-search pareto DIR` prints), best first.

    Columns: the identifying and measured columns present in `df`, the objectives, and ``knee``
    (True on the knee point when there are two objectives).
    """
    objectives = dict(objectives or PLOT_OBJECTIVES)
    front = pareto_front(df, objectives)
    columns = [c for c in dict.fromkeys([*TABLE_COLUMNS[:6], *objectives, *TABLE_COLUMNS[6:]]) if c in df.columns]
    table = front[columns].copy()
    if len(objectives) == 2:
        knee_label = knee_point(front, objectives).name if len(front) else None
        table["knee"] = [label == knee_label for label in front.index]
    return table.reset_index(drop=True)


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


# --- figures ---------------------------------------------------------------------------------------


def plot_front(df: pd.DataFrame) -> Figure | None:
    """PSNR-Y vs throughput of the complete trials, coloured by block, with the front as a step line.

    Paper baselines (rows with a ``baseline`` name) are labelled; trials whose timing was not
    exclusive get an 'X' marker; log x-axis when throughput spans more than 1.5 decades.
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
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


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
    """Hypervolume of the front after each trial (trial_id order), against a stated reference.

    None unless there are exactly two objectives and at least one eligible trial.
    """
    objectives = dict(objectives)
    if len(objectives) != 2 or not eligible_mask(df, objectives).any() or "trial_id" not in df.columns:
        return None
    reference = dict(reference or default_reference(df, objectives))
    history = hypervolume_history(df, objectives, reference)
    units = " × ".join(UNITS.get(name, name) for name in objectives)
    with _style():
        fig = _figure(6.4, 3.8)
        ax = fig.subplots()
        sns.lineplot(data=history, x="trial", y="hypervolume", drawstyle="steps-post",
                     marker="o" if len(history) <= 60 else None, markersize=4, ax=ax)
        ax.set_xlabel("trials (in trial_id order)")
        ax.set_ylabel(f"hypervolume ({units})")
        ref_text = ", ".join(f"{name} = {_number(reference[name])} {UNITS.get(name, '')}".rstrip()
                             for name in objectives)
        ax.set_title(f"Hypervolume of the front over trials\nreference point: {ref_text}")
        ax.set_ylim(bottom=0)
    return fig


# --- the report ------------------------------------------------------------------------------------


def write_report(study_dir: Path, df: pd.DataFrame | None = None, *, study_meta: dict | None = None) -> Path:
    """Write ``study_dir/report/`` (PNG figures, front.csv, report.html) and return the HTML path.

    `df` defaults to ``study_dir/results.parquet``. `study_meta` (e.g. the resolved study as a dict)
    may name ``objectives`` as {column: 'max'|'min'}; it is shown as the settings when
    ``study_dir/study.yaml`` is absent.
    """
    study_dir = Path(study_dir)
    if df is None:
        df = _load_results(study_dir)
    for column in ("trial_id", "status"):
        if column not in df.columns:
            raise SrSearchError(
                f"{study_dir}: the results have no {column!r} column (columns: {', '.join(map(str, df.columns))})"
            )
    meta = dict(study_meta or {})
    objectives = _objectives(meta)
    out = study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name in (*FIGURES, "front.csv"):
        (out / name).unlink(missing_ok=True)

    sections = [_summary_section(df)]
    complete = _complete(df)
    if len(complete):
        sections.append(_front_section(df, objectives, out))
        ablation = plot_ablation(df)
        if ablation is not None:
            sections.append(_figure_section("Ablation", ablation, out / "ablation.png",
                                            _table_html(ablation_table(df))))
        sections.append(_hypervolume_section(df, objectives, out))
    sections.append(_failures_section(df))
    sections.append(_settings_section(study_dir, meta))
    sections.append(_environment_section(df))
    title = f"sr-search report: {_study_name(df, meta, study_dir)}"
    page = _PAGE.format(title=html.escape(title), css=_CSS, body="\n".join(s for s in sections if s))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _load_results(study_dir: Path) -> pd.DataFrame:
    path = study_dir / "results.parquet"
    if not path.is_file():
        where = "does not exist" if not study_dir.exists() else "has no results.parquet"
        raise SrSearchError(
            f"{study_dir}: {where}; point `sr-search report` at a study directory written by "
            f"`sr-search launch` (it holds results.parquet)"
        )
    return pd.read_parquet(path)


def _objectives(meta: Mapping[str, Any]) -> dict[str, str]:
    given = meta.get("objectives")
    if given is None:
        return dict(PLOT_OBJECTIVES)
    if isinstance(given, Mapping) and given and all(d in DIRECTIONS for d in given.values()):
        return {str(k): str(v) for k, v in given.items()}
    raise SrSearchError(
        f"study_meta field 'objectives': need a mapping of column -> 'max'|'min'; got {given!r}"
    )


def _summary_section(df: pd.DataFrame) -> str:
    counts = df["status"].astype(str).value_counts()
    parts = ", ".join(f"{n} {html.escape(status)}" for status, n in counts.items())
    text = f"<p>{len(df)} trials: {parts}.</p>" if len(df) else "<p>The study has no trials yet.</p>"
    if len(df) and not (df["status"] == "complete").any():
        text += (
            '<div class="notice"><h2>No trial completed</h2><p>None of the '
            f"{len(df)} trials finished, so there is no front and no figure. The reasons are listed "
            "under <a href=\"#failures\">Trials that did not complete</a>.</p></div>"
        )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<section><h2>Summary</h2>{text}<p class=\"small\">Generated {stamp}.</p></section>"


def _front_section(df: pd.DataFrame, objectives: dict[str, str], out: Path) -> str:
    missing = [name for name in objectives if name not in df.columns]
    if missing:
        return f"<section><h2>Pareto front</h2><p>No front: no column {', '.join(missing)} in the results.</p></section>"
    table = front_table(df, objectives)
    table.to_csv(out / "front.csv", index=False)
    names = ", ".join(f"{html.escape(LABELS.get(n, n))} ({d})" for n, d in objectives.items())
    note = ""
    if "timing_exclusive" in table.columns and not _exclusive(table).all():
        note = ('<p class="warn">Some front trials were timed on a shared device '
                "(timing_exclusive = False): their throughput and latency are not reliable.</p>")
    body = (f"<h3>Front table</h3><p>Objectives: {names}; {len(table)} trials on the front"
            f"{', knee marked' if 'knee' in table.columns else ''}.</p>{note}{_table_html(table)}")
    fig = plot_front(df)
    if fig is None:
        return f"<section><h2>Pareto front</h2><p>No complete trial has both PSNR-Y and throughput.</p>{body}</section>"
    return _figure_section("Pareto front", fig, out / "front.png", body)


def _hypervolume_section(df: pd.DataFrame, objectives: dict[str, str], out: Path) -> str:
    if len(objectives) != 2:
        return (f"<section><h2>Hypervolume</h2><p>Hypervolume is computed for two objectives; "
                f"this study has {len(objectives)}.</p></section>")
    if any(name not in df.columns for name in objectives):
        return ""
    fig = plot_hypervolume(df, objectives)
    if fig is None:
        return ""
    return _figure_section("Hypervolume", fig, out / "hypervolume.png", "")


def _failures_section(df: pd.DataFrame) -> str:
    rest = df[df["status"].astype(str) != "complete"]
    if rest.empty:
        return ""
    errors = rest["error"] if "error" in rest.columns else pd.Series(None, index=rest.index)
    reasons = errors.map(lambda e: "(no error recorded)" if _missing(e) or not str(e).strip() else str(e).strip())
    grouped = (
        pd.DataFrame({"status": rest["status"].astype(str), "reason": reasons, "trial_id": rest["trial_id"].astype(str)})
        .groupby(["status", "reason"], sort=False)["trial_id"]
        .agg(count="size", trials=lambda ids: ", ".join(ids.iloc[:5]) + (" ..." if len(ids) > 5 else ""))
        .reset_index()
        .sort_values("count", ascending=False, kind="stable")
    )
    rows = "".join(
        f"<tr><td>{html.escape(r.status)}</td><td>{r.count}</td><td>{html.escape(r.trials)}</td>"
        f"<td><pre>{html.escape(r.reason)}</pre></td></tr>"
        for r in grouped.itertuples()
    )
    return (
        '<section id="failures"><h2>Trials that did not complete</h2>'
        "<table><thead><tr><th>status</th><th>count</th><th>trials</th><th>reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _settings_section(study_dir: Path, meta: Mapping[str, Any]) -> str:
    path = study_dir / "study.yaml"
    if path.is_file():
        text, source = path.read_text(encoding="utf-8"), "study.yaml"
    elif meta:
        text, source = yaml.safe_dump(_plain(meta), sort_keys=False, allow_unicode=True), "study metadata"
    else:
        return "<section><h2>Study settings</h2><p>No study.yaml in the study directory.</p></section>"
    return f"<section><h2>Study settings</h2><p class=\"small\">From {source}.</p><pre>{html.escape(text)}</pre></section>"


def _environment_section(df: pd.DataFrame) -> str:
    rows = []
    for column in ("timing_device", "timing_protocol", "timing_precision", "timing_exclusive", "host", "versions"):
        if column not in df.columns:
            continue
        values = df[column].map(_value_text)
        for value, count in values.value_counts(dropna=False).items():
            rows.append(f"<tr><td>{column}</td><td><code>{html.escape(value)}</code></td><td>{count}</td></tr>")
    if not rows:
        return "<section><h2>Environment</h2><p>The results record no timing device or versions.</p></section>"
    return (
        "<section><h2>Environment</h2><table><thead><tr><th>field</th><th>value</th><th>trials</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _figure_section(title: str, fig: Figure, path: Path, extra: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    png = buffer.getvalue()
    path.write_bytes(png)
    caption = html.escape(" ".join(ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()))
    encoded = base64.b64encode(png).decode("ascii")
    return (
        f"<section><h2>{html.escape(title)}</h2><figure><img alt=\"{html.escape(title)}\" "
        f"src=\"data:image/png;base64,{encoded}\"><figcaption>{caption} ({path.name})</figcaption></figure>"
        f"{extra}</section>"
    )


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


def _complete(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"].astype(str) == "complete"]


def _numeric(df: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _exclusive(df: pd.DataFrame) -> pd.Series:
    """Only an explicit True counts: a missing flag is not evidence of an exclusive device."""
    if "timing_exclusive" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["timing_exclusive"].map(lambda v: v is True or (isinstance(v, np.bool_) and bool(v)))


def _baselines(df: pd.DataFrame) -> pd.DataFrame:
    if "baseline" not in df.columns:
        return df.iloc[:0]
    named = df["baseline"].map(lambda v: not _missing(v) and bool(str(v).strip()))
    return df[named]


def _timing_summary(df: pd.DataFrame) -> str:
    parts = []
    for column in ("timing_device", "timing_protocol", "timing_precision"):
        if column in df.columns:
            values = [str(v) for v in df[column].dropna().unique()]
            if values:
                parts.append(values[0] if len(values) == 1 else f"{len(values)} {column.split('_')[1]}s")
    return "timed on " + ", ".join(parts) if parts else "timing device not recorded"


def _study_name(df: pd.DataFrame, meta: Mapping[str, Any], study_dir: Path) -> str:
    if meta.get("name"):
        return str(meta["name"])
    if "study" in df.columns and df["study"].notna().any():
        return str(df["study"].dropna().iloc[0])
    return study_dir.resolve().name


def _table_html(table: pd.DataFrame) -> str:
    shown = table.copy()
    for column in shown.columns:
        shown[column] = shown[column].map(lambda v, c=column: _cell(c, v))
    return shown.to_html(index=False, escape=True, border=0, classes="data")


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


def _value_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return json.dumps(_plain(value), sort_keys=True)
    if isinstance(value, np.ndarray):
        return json.dumps(_plain(value.tolist()))
    return "(not recorded)" if _missing(value) else str(value)


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays and tuples to plain Python, so YAML/JSON dumps stay readable."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


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
    return pd.concat([rows[rows["factor"] != "base"], *copies])


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


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _span_text(values: pd.Series) -> str:
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}-{high}"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;
text-align:left;vertical-align:top}th{background:#f4f4f4}pre{white-space:pre-wrap;margin:0;font-size:.85em}
section>pre{background:#f7f7f7;padding:.8em;border-radius:4px}img{max-width:100%}figure{margin:0}
figcaption,.small{font-size:.8em;color:#666}.notice{border:2px solid #c0392b;background:#fdf0ef;padding:.4em 1em;
border-radius:4px}.warn{color:#a04000}
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""
