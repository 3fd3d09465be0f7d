"""A self-contained HTML report of one study directory (`sr-search report STUDY_DIR`).

The report is honest about its data: a study where nothing completed gets a page listing why instead of a
traceback, and front trials timed on a shared device are flagged. The tables live in `tables` and the
figures in `figures`; both are re-exported here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from ..errors import SrSearchError
from ..columns import TrialStatus
from .effects import ablation_effects, budget_hint, quality_objective
from .effects_figure import plot_effects
from .effects_view import effects_display, hint_text, rules_text
from .fidelity import fidelity_section
from .figures import LOG_DECADES, plot_ablation, plot_front, plot_hypervolume
from .pareto import DIRECTIONS, hypervolume_reference, study_hypervolume
from .quality_flags import COLLAPSE_DROP_DB, CONSTANT_SPREAD, collapse_cause, flags
from .store import study_factors, typed
from .time_shares import COLUMNS as TIME_COLUMNS
from .time_shares import shares_line, totals
from .study_dir import StudyDir, atomic_write
from .tables import (
    LABELS, PLOT_OBJECTIVES, TABLE_COLUMNS, UNITS, _cell, _complete, _exclusive, _missing, ablation_table, front_table,
    front_text,
)

__all__ = [
    "write_report", "hypervolume_text", "front_table", "front_text", "ablation_table", "plot_front", "plot_ablation",
    "plot_hypervolume",
    "PLOT_OBJECTIVES", "LOG_DECADES", "LABELS", "UNITS", "TABLE_COLUMNS", "FIGURES",
]

FIGURES = ("front.png", "ablation.png", "effects.png", "hypervolume.png")
#: effect sizes the budget hint resolves, for objectives in dB
RESOLVE_DB = (0.02, 0.05, 0.1)


# --- the report ------------------------------------------------------------------------------------


def write_report(study_dir: Path, df: pd.DataFrame | None = None, *, study_meta: dict | None = None,
                 reference: Mapping[str, float] | None = None) -> Path:
    """Write ``study_dir/report/`` (PNG figures, front.csv, report.html) and return the HTML path.

    `df` defaults to ``study_dir/results.parquet``. `study_meta` (e.g. the resolved study as a dict)
    may name ``objectives`` as {column: 'max'|'min'} and ``factors`` (an ablation's, for the order of its levels;
    else read from ``study_dir/study.yaml``); it is shown as the settings when ``study_dir/study.yaml`` is absent.

    Each figure appears only where it means something: no front when every complete trial deploys to one network
    (an ablation of training-time choices), no hypervolume history for an ablation (its trial order is a grid, not
    a search); an ablation gets its effects vs the base instead.

    The hypervolume is stated with its reference point, chosen by the rule `sr-search compare` uses
    (`pareto.hypervolume_reference`: bicubic for PSNR-Y, 0 for throughput, the worst value + 10% of the range for
    costs); `reference` pins values by objective name (`--reference NAME=VALUE`).
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
    out = StudyDir(study_dir).report
    out.mkdir(parents=True, exist_ok=True)
    for name in (*FIGURES, "front.csv"):
        (out / name).unlink(missing_ok=True)

    sections = [_summary_section(df)]
    complete = _complete(df)
    if len(complete):
        ablation, one_network = _is_ablation(complete), _one_network(complete)
        sections.append(_one_network_section(complete, ablation) if one_network
                        else _front_section(df, objectives, out))
        if ablation:
            sections.append(_effects_section(df, objectives, _study_factors(study_dir, meta), out))
        elif not one_network:
            sections.append(_hypervolume_section(df, objectives, out, reference))
    sections.append(fidelity_section(study_dir, out))  # '' unless the study confirms another (`confirms:`)
    sections.append(_failures_section(df))
    sections.append(_settings_section(study_dir, meta))
    sections.append(_environment_section(df))
    title = f"sr-search report: {_study_name(df, meta, study_dir)}"
    page = _PAGE.format(title=html.escape(title), css=_CSS, body="\n".join(s for s in sections if s))
    path = out / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def _load_results(study_dir: Path) -> pd.DataFrame:
    path = StudyDir(study_dir).results
    if not path.is_file():
        where = "does not exist" if not study_dir.exists() else f"has no {path.name}"
        raise SrSearchError(
            f"{study_dir}: {where}; point `sr-search report` at a study directory written by "
            f"`sr-search launch` (it holds {path.name})"
        )
    return typed(pd.read_parquet(path))


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
    if len(df) and not (df["status"] == TrialStatus.COMPLETE).any():
        text += (
            '<div class="notice"><h2>No trial completed</h2><p>None of the '
            f"{len(df)} trials finished, so there is no front and no figure. The reasons are listed "
            "under <a href=\"#failures\">Trials that did not complete</a>.</p></div>"
        )
    text += _flags_text(df)
    times = shares_line(totals({c: df[c].tolist() for c in TIME_COLUMNS if c in df.columns}))
    text += f"<p>Where the time went: {html.escape(times)}.</p>" if times else ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<section><h2>Summary</h2>{text}<p class=\"small\">Generated {stamp}.</p></section>"


def _flags_text(df: pd.DataFrame) -> str:
    """The summary's two groups of flagged trials (`results.quality_flags`): under bicubic (a measurement, kept) and
    collapsed (a defect, with what it did)."""
    marked = flags(df)
    text = ""
    below = df[marked["below_bicubic"] & ~marked["collapsed"]]
    if len(below):
        ids = ", ".join(below["trial_id"].astype(str))
        text += (f'<p class="warn">Below bicubic: trial{"s" if len(below) > 1 else ""} {html.escape(ids)} end under '
                 "bicubic upsampling's PSNR-Y. Usually under-trained at this budget (a network whose skip starts "
                 "from nearest or bilinear upsampling begins below bicubic), not broken. Kept on the front figure, "
                 "greyed in the table, not counted in the hypervolume.</p>")
    collapsed = df[marked["collapsed"]]
    if len(collapsed):
        items = "".join(f"<li>trial {html.escape(str(row['trial_id']))}"
                        f"{' (' + html.escape(str(row['block'])) + ')' if 'block' in row.index else ''}: "
                        f"{html.escape(collapse_cause(row))}</li>" for _, row in collapsed.iterrows())
        text += (f'<div class="notice"><p><b>Collapsed training</b>: these trainings went wrong (final PSNR-Y '
                 f"{COLLAPSE_DROP_DB:g} dB or more below the network's own start, or an output whose spread is "
                 f"under {CONSTANT_SPREAD:.0%} of the truth's). Their numbers are kept but they are not a result; "
                 f"not counted in the hypervolume.</p><ul>{items}</ul></div>")
    return text


def _front_section(df: pd.DataFrame, objectives: dict[str, str], out: Path) -> str:
    missing = [name for name in objectives if name not in df.columns]
    if missing:
        return (f"<section><h2>Pareto front</h2><p>No front: no column {', '.join(missing)} in the results.</p>"
                "</section>")
    table = front_table(df, objectives)
    table["quality_flag"] = _flag_labels(df, table)
    atomic_write(out / "front.csv", lambda tmp: table.to_csv(tmp, index=False))
    names = ", ".join(f"{html.escape(LABELS.get(n, n))} ({d})" for n, d in objectives.items())
    note = ""
    if "timing_exclusive" in table.columns and not _exclusive(table).all():
        note = ('<p class="warn">Some front trials were timed on a shared device '
                "(timing_exclusive = False): their throughput and latency are not reliable.</p>")
    grey = table["quality_flag"].notna().to_numpy()
    shown = table if grey.any() else table.drop(columns="quality_flag")
    if grey.any():
        note += ('<p class="small">Greyed: below bicubic (under-trained at this budget) or collapsed (a defect); '
                 "neither counts in the hypervolume.</p>")
    body = (f"<h3>Front table</h3><p>Objectives: {names}; {len(table)} trials on the front"
            f"{', knee marked' if 'knee' in table.columns else ''}.</p>{note}{_table_html(shown, grey=grey)}")
    fig = plot_front(df)
    if fig is None:
        return f"<section><h2>Pareto front</h2><p>No complete trial has both PSNR-Y and throughput.</p>{body}</section>"
    return _figure_section("Pareto front", fig, out / "front.png", body)


def _one_network_section(complete: pd.DataFrame, ablation: bool) -> str:
    """What replaces the front when every complete trial deploys to the same network: one point, no trade-off."""
    first = complete.iloc[0]
    facts = [f"{LABELS.get(c, c)} {_cell(c, first[c])}" for c in ("params_deploy", "throughput", "latency_ms")
             if c in complete.columns and not _missing(first[c])]
    return ("<section><h2>Pareto front</h2><p>Not drawn: all "
            f"{len(complete)} complete trials deploy to the same network (deploy_key "
            f"<code>{html.escape(str(first['deploy_key']))}</code>"
            f"{': ' + html.escape(', '.join(facts)) if facts else ''}"
            "), so quality and cost do not trade off here"
            f"{'; the effects below compare their quality' if ablation else ''}.</p></section>")


def _effects_section(df: pd.DataFrame, objectives: dict[str, str], factors: Mapping[str, Any] | None,
                     out: Path) -> str:
    """Effects vs the base: the figure, the rules behind the verdicts, the budget hint and both tables."""
    effects = ablation_effects(df, objectives, factors=factors)
    if effects.empty:
        return ""
    objective = quality_objective(list(objectives))
    rules = "".join(f"<li>{html.escape(line)}</li>" for line in rules_text(effects))
    body = f"<h3>How the verdicts were decided</h3><ul>{rules}</ul>"
    hint = budget_hint(df, objective, RESOLVE_DB) if UNITS.get(objective) == "dB" else pd.DataFrame()
    if not hint.empty:
        body += f"<p><b>Budget.</b> {html.escape(hint_text(hint, effects))}</p>"
    body += f"<h3>Effects vs the base</h3>{_table_html(effects_display(effects))}"
    body += (f"<h3>Values per level</h3><p class=\"small\">Mean and s.d. over seeds; the base's row repeated in each "
             f"factor.</p>{_table_html(ablation_table(df))}")
    fig = plot_effects(effects, objective)
    if fig is None:
        return f"<section><h2>Effects vs the base</h2>{body}</section>"
    return _figure_section("Effects vs the base", fig, out / "effects.png", body)


def _is_ablation(complete: pd.DataFrame) -> bool:
    return "factor" in complete.columns and complete["factor"].map(lambda f: isinstance(f, str)).any()


def _one_network(complete: pd.DataFrame) -> bool:
    """Two or more complete trials, all deploying to one network: a front of them would be a single point."""
    return len(complete) >= 2 and "deploy_key" in complete.columns and complete["deploy_key"].nunique() == 1


def _study_factors(study_dir: Path, meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ablation's factors as the study file lists them (their order is the order levels are shown in)."""
    if isinstance(meta.get("factors"), Mapping):
        return meta["factors"]
    return study_factors(study_dir)


def _hypervolume_section(df: pd.DataFrame, objectives: dict[str, str], out: Path,
                         given: Mapping[str, float] | None = None) -> str:
    """The study's hypervolume, its reference point and how each value was chosen (the rule and the number
    `sr-search compare` prints for this study), and its history over trials."""
    if len(objectives) != 2:
        return (f"<section><h2>Hypervolume</h2><p>Hypervolume is computed for two objectives; "
                f"this study has {len(objectives)}.</p></section>")
    if any(name not in df.columns for name in objectives):
        return ""
    reference = hypervolume_reference(df, objectives, given)
    volume = study_hypervolume(df, objectives, reference)
    text = (f"<p><b>Hypervolume {html.escape(_cell('hypervolume', volume))}</b> "
            f"({html.escape(_hv_units(objectives))}), reference point: {html.escape(reference.text(_cell))}. The "
            "same rule and number as <code>sr-search compare</code>; <code>--reference NAME=VALUE</code> pins a "
            "value. Pruned, below-bicubic and collapsed trials add nothing.</p>")
    fig = plot_hypervolume(df, objectives, reference.values)
    if fig is None:
        return f"<section><h2>Hypervolume</h2>{text}</section>"
    return _figure_section("Hypervolume", fig, out / "hypervolume.png", text)


def hypervolume_text(df: pd.DataFrame, objectives: Mapping[str, str],
                     given: Mapping[str, float] | None = None) -> str | None:
    """'hypervolume 12.3 (dB × images/s); reference point: psnr_y 27.160 (bicubic PSNR-Y), throughput 0 (fixed at
    0)': what `sr-search report` prints, the number `compare` prints for the study. None without two objectives in
    the results or a complete trial."""
    objectives = dict(objectives)
    if len(objectives) != 2 or any(name not in df.columns for name in objectives) or not len(_complete(df)):
        return None
    reference = hypervolume_reference(df, objectives, given)
    volume = study_hypervolume(df, objectives, reference)
    return (f"hypervolume {_cell('hypervolume', volume)} ({_hv_units(objectives)}); reference point: "
            f"{reference.text(_cell)}")


def _hv_units(objectives: Mapping[str, str]) -> str:
    return " × ".join(UNITS.get(name, name) for name in objectives)


def _failures_section(df: pd.DataFrame) -> str:
    rest = df[df["status"].astype(str) != TrialStatus.COMPLETE]
    if rest.empty:
        return ""
    errors = rest["error"] if "error" in rest.columns else pd.Series(None, index=rest.index)
    reasons = errors.map(lambda e: "(no error recorded)" if _missing(e) or not str(e).strip() else str(e).strip())
    if "rung_iterations" in rest.columns:  # stopped early: say where, not "no error"
        pruned = rest["status"].astype(str) == TrialStatus.PRUNED
        reasons[pruned] = [f"stopped early by successive halving at {int(n)} iterations" if not _missing(n)
                           else "stopped early by successive halving" for n in rest.loc[pruned, "rung_iterations"]]
    grouped = (
        pd.DataFrame({"status": rest["status"].astype(str), "reason": reasons,
                      "trial_id": rest["trial_id"].astype(str)})
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
    path = StudyDir(study_dir).study_file
    if path.is_file():
        text, source = path.read_text(encoding="utf-8"), path.name
    elif meta:
        text, source = yaml.safe_dump(_plain(meta), sort_keys=False, allow_unicode=True), "study metadata"
    else:
        return f"<section><h2>Study settings</h2><p>No {path.name} in the study directory.</p></section>"
    return (f"<section><h2>Study settings</h2><p class=\"small\">From {source}.</p><pre>{html.escape(text)}</pre>"
            "</section>")


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
    atomic_write(path, lambda tmp: tmp.write_bytes(png))
    caption = html.escape(" ".join(ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()))
    encoded = base64.b64encode(png).decode("ascii")
    return (
        f"<section><h2>{html.escape(title)}</h2><figure><img alt=\"{html.escape(title)}\" "
        f"src=\"data:image/png;base64,{encoded}\"><figcaption>{caption} ({path.name})</figcaption></figure>"
        f"{extra}</section>"
    )


# --- helpers ---------------------------------------------------------------------------------------


def _study_name(df: pd.DataFrame, meta: Mapping[str, Any], study_dir: Path) -> str:
    if meta.get("name"):
        return str(meta["name"])
    if "study" in df.columns and df["study"].notna().any():
        return str(df["study"].dropna().iloc[0])
    return study_dir.resolve().name


def _table_html(table: pd.DataFrame, grey: np.ndarray | None = None) -> str:
    """A table as HTML, cells written as in the terminal; rows where `grey` is True get the class "grey"."""
    shown = table.copy()
    for column in shown.columns:
        shown[column] = shown[column].map(lambda v, c=column: _cell(c, v))
    text = shown.to_html(index=False, escape=True, border=0, classes="data")
    # long column names may break after an underscore (params_deploy), so a wide table still fits 1280 px
    text = re.sub(r"<th>([^<]*)</th>", lambda m: "<th>" + m.group(1).replace("_", "_<wbr>") + "</th>", text)
    if grey is None or not np.asarray(grey).any():
        return f'<div class="scroll">{text}</div>'
    head, _, rest = text.partition("<tbody>")
    rows = rest.split("<tr>")
    body = rows[0] + "".join(('<tr class="grey">' if g else "<tr>") + r for g, r in zip(grey, rows[1:], strict=True))
    return f'<div class="scroll">{head}<tbody>{body}</div>'


def _flag_labels(df: pd.DataFrame, table: pd.DataFrame) -> list[str | None]:
    """Per row of a display table (by trial_id): 'collapsed', 'below bicubic' or None."""
    marked = flags(df)
    label = pd.Series(np.where(marked["collapsed"], "collapsed", np.where(marked["below_bicubic"], "below bicubic",
                                                                          "")), index=df.index)
    by_id = dict(zip(df["trial_id"].astype(str), label, strict=True))
    return [by_id.get(str(t)) or None for t in table["trial_id"]]


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


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;
text-align:left;vertical-align:top}th{background:#f4f4f4}pre{white-space:pre-wrap;margin:0;font-size:.85em}
section>pre{background:#f7f7f7;padding:.8em;border-radius:4px}img{max-width:100%}figure{margin:0}
figcaption,.small{font-size:.8em;color:#666}.notice{border:2px solid #c0392b;background:#fdf0ef;padding:.4em 1em;
border-radius:4px}.warn{color:#a04000}tr.grey td{color:#9a9a9a}.scroll{overflow-x:auto;max-width:100%}
table.data{font-size:.8em}table.data th,table.data td{padding:.25em .45em}td{overflow-wrap:break-word}
pre,code{overflow-wrap:anywhere}
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""
