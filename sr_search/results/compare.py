"""Compare the fronts of several studies: one table, one figure, one hypervolume reference for all of them.

A comparison is only honest between like things, so it reads each folder's frozen study (`study.yaml`,
`resolved.yaml`) and its rows first:

- studies that optimise different objectives are refused (name common ones with `objectives=`);
- a study timed under another protocol or on another device than the first study named, or whose PSNR was
  measured on other data or at another scale (bicubic PSNR-Y or scale differ), is flagged: the flag is in the
  studies table, printed, and drawn on the figure. `strict=True` refuses it instead.

The hypervolume reference is shared by every study of the comparison and chosen by the one rule the report uses
too (`pareto.hypervolume_reference`), fixed where the metric allows it, so adding a study does not move the others'
values: PSNR-Y at the bicubic PSNR-Y of the rows (a candidate that does not beat bicubic adds nothing), PSNR gain,
SSIM, NTIRE score, throughput and Mpix/s at 0. Costs with no natural worst value (latency, parameters, MACs, memory)
take the worst value among all compared studies pushed 10% of the range further; pin them with `reference=` to
compare across comparisons. A study's hypervolume is `pareto.study_hypervolume` of its rows: the number its report
prints for the same reference (below-bicubic and collapsed trials count for nothing; the fronts table says which
front points are either, `results.quality_flags`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..columns import USES_TIMING, TrialStatus
from ..errors import SrSearchError
from .fidelity import confirmed_source
from .pareto import (
    ZERO_REFERENCE, HypervolumeReference, dominance, hypervolume_reference, pareto_front, study_hypervolume,
)
from .quality_flags import FLAGS, flags as quality_flags
from .store import load_results
from .study_dir import StudyDir
from .tables import _cell, ablation_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ANCHORS", "Comparison", "compare_studies"]

#: fixed hypervolume reference values: the worst value that still means something, the same in every comparison
ANCHORS = {name: 0.0 for name in ZERO_REFERENCE}
#: columns that depend on the timing protocol and device (from the column catalog)
TIMED = USES_TIMING
_HV_ZERO = ("(HV 0: no front point beats the reference in every objective, e.g. none above bicubic; "
            "--reference NAME=VALUE pins another)")
_FLAGS_NOTE = ("(below_bicubic: trials that end under bicubic PSNR-Y, still under-trained at this budget; collapsed: "
               "trainings that went wrong, far below their own start or a near-constant output. Neither counts in "
               "the hypervolume.)")
_FRONTS_HEAD = ("Fronts (dominated_by: points of another study's front that are at least as good in every objective "
                "and better in one):")
_FRONT_COLUMNS = ("study", "trial_id", "source_trial_id", "baseline", "factor", "level", "block", "channels", "depth")


@dataclass(frozen=True)
class StudyRows:
    """One study folder as a comparison sees it: its label, what it optimised, how it was timed, its rows."""

    label: str
    root: Path
    name: str
    mode: str
    objectives: dict[str, str]
    protocol: Any  # the resolved timing protocol (a mapping), or its name when the folder predates resolved.yaml
    rows: pd.DataFrame = field(repr=False)

    @property
    def complete(self) -> pd.DataFrame:
        return self.rows[self.rows["status"].astype("string").eq(TrialStatus.COMPLETE).fillna(False).astype(bool)]

    def values(self, column: str) -> list:
        """The distinct non-missing values of `column` among complete rows, in order of appearance."""
        if column not in self.rows.columns:
            return []
        return list(dict.fromkeys(v for v in self.complete[column].tolist() if not _missing(v)))

    def protocol_text(self) -> str:
        p = self.protocol
        if not isinstance(p, Mapping):
            return str(p)
        size = f"HR {_size(p['hr_size'])}" if p.get("hr_size") else f"LR {_size(p.get('lr_size'))}"
        return f"{p.get('name')} ({p.get('precision')}, batch {p.get('batch')}, {size}, {p.get('device')})"


@dataclass(frozen=True)
class Comparison:
    """What `compare_studies` found. `fronts` is the table (one row per front point of every study, with the
    points of other fronts that dominate it); `studies` one row per study; `levels` the ablation levels side by
    side (None without an ablation study); `flags` one line per incomparability found."""

    objectives: dict[str, str]
    reference: dict[str, float]
    reference_rule: dict[str, str]
    studies: pd.DataFrame
    fronts: pd.DataFrame
    dominated: pd.DataFrame  # [a, b]: how many of b's front points a's front dominates
    levels: pd.DataFrame | None
    flags: list[str]
    flag_kinds: dict[str, list[str]]  # per flagged study, what differs ('timing protocol', 'scale', ...)
    data: list[StudyRows] = field(repr=False)

    def text(self) -> str:
        """The comparison for a terminal: objectives, reference, flags, the studies, the fronts, the levels."""
        names = ", ".join(f"{n} ({d})" for n, d in self.objectives.items())
        ref = HypervolumeReference(self.reference, self.reference_rule).text(_cell)
        lines = [f"Comparing {len(self.data)} studies on {names}", f"hypervolume reference: {ref}"]
        lines += [f"FLAG {flag}" for flag in self.flags]
        lines += [f"{row.study} confirms {row.confirms}: the same candidates trained again with another budget "
                  f"(source_trial_id links the rows; sr-search confirm {row.folder} --show for the proxy's fidelity)"
                  for row in self.studies.itertuples() if isinstance(row.confirms, str)]
        lines += ["", _frame_text(self.studies.drop(columns=["folder", "flag_detail"]))]
        if ((self.studies["hypervolume"] == 0) & (self.studies["front"] > 0)).any():
            lines.append(_HV_ZERO)
        if self.studies[list(FLAGS)].to_numpy().any():
            lines.append(_FLAGS_NOTE)
        lines += ["", _FRONTS_HEAD, _frame_text(self.fronts)]
        lines += [""] + [f"{a}'s front dominates {int(self.dominated.loc[a, b])} of {b}'s "
                         f"{int(self.studies.set_index('study').loc[b, 'front'])} front points"
                         for a in self.dominated.index for b in self.dominated.columns if a != b]
        if self.levels is not None:
            lines += ["", "Ablation levels side by side (mean over seeds):", _frame_text(self.levels)]
        return "\n".join(lines)

    def figure(self) -> Figure:
        """The fronts on one matplotlib Figure (Agg, no display)."""
        from .compare_figure import plot_fronts

        return plot_fronts(self)

    def write(self, out: str | os.PathLike[str]) -> dict[str, Path]:
        """Write fronts.png, fronts.csv, studies.csv (and levels.csv for ablations) into the folder `out`."""
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise SrSearchError(f"--out {folder} is a file, not a folder: name a folder for the comparison")
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"figure": folder / "fronts.png", "fronts": folder / "fronts.csv", "studies": folder / "studies.csv"}
        fig = self.figure()
        fig.savefig(paths["figure"], dpi=150, bbox_inches="tight")
        self.fronts.to_csv(paths["fronts"], index=False)
        self.studies.to_csv(paths["studies"], index=False)
        if self.levels is not None:
            paths["levels"] = folder / "levels.csv"
            self.levels.to_csv(paths["levels"], index=False)
        return paths


def compare_studies(
    study_dirs: Iterable[str | os.PathLike[str]],
    *,
    objectives: Mapping[str, str] | None = None,
    reference: Mapping[str, float] | None = None,
    strict: bool = False,
) -> Comparison:
    """Compare the fronts of two or more study folders (see the module docstring for what is refused, what is
    flagged and how the hypervolume reference is chosen). `objectives` overrides the studies' own (every study
    must have those columns); `reference` pins reference values by objective name."""
    data = _label([open_study(p) for p in study_dirs])
    if len(data) < 2:
        raise SrSearchError(f"compare needs two or more study folders; got {len(data)}")
    objectives = dict(objectives) if objectives else _common_objectives(data)
    flags = _flags(data, objectives)
    messages = [message for found in flags.values() for _, message in found]
    if strict and messages:
        raise SrSearchError("these studies are not comparable (--strict):\n" + "\n".join(f"  {m}" for m in messages))
    ref, rule = shared_reference(data, objectives, reference or {})
    fronts = {s.label: pareto_front(s.rows, objectives) for s in data}
    volumes = {s.label: study_hypervolume(s.rows, objectives, ref) for s in data}
    table, counts = _front_table(fronts, objectives)
    studies = pd.DataFrame([_study_row(s, fronts[s.label], volumes[s.label], flags[s.label]) for s in data])
    studies.insert(2, "confirms", [_confirms(s, data) for s in data])  # a confirmation names its source
    return Comparison(objectives=objectives, reference=ref, reference_rule=rule, studies=studies, fronts=table,
                      dominated=counts, levels=_levels(data), flags=messages,
                      flag_kinds={k: [kind for kind, _ in fs] for k, fs in flags.items() if fs}, data=data)


def open_study(path: str | os.PathLike[str]) -> StudyRows:
    """A study folder's frozen study (through the one bounded reader, `StudyDir.frozen`), resolved timing protocol
    and rows."""
    folder = StudyDir(path).require()
    frozen = folder.frozen()
    if not frozen.found:
        raise SrSearchError(f"{folder.root} has no study.yaml: not a study folder that sr-search launch started")
    return StudyRows(label=frozen.name, root=folder.root, name=frozen.name, mode=frozen.mode,
                     objectives=frozen.objectives, protocol=frozen.protocol, rows=load_results(folder))


def shared_reference(
    data: list[StudyRows], objectives: Mapping[str, str], given: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, str]]:
    """One reference point for every study, and how each of its values was chosen: `pareto.hypervolume_reference`
    on the rows of every study together."""
    union = pd.concat([s.rows for s in data], ignore_index=True)
    reference = hypervolume_reference(union, objectives, given)
    return reference.values, reference.rules


# --- checks ----------------------------------------------------------------------------------------------------


def _label(data: list[StudyRows]) -> list[StudyRows]:
    """Study names as labels; the folder name (then the path) where two studies share a name."""
    for key in (lambda s: s.name, lambda s: s.root.name, lambda s: str(s.root)):
        labels = [key(s) for s in data]
        if len(set(labels)) == len(labels):
            break
    else:
        raise SrSearchError(f"the same study folder is named twice: {', '.join(str(s.root) for s in data)}")
    return [dataclasses.replace(s, label=label) for s, label in zip(data, labels, strict=True)]


def _common_objectives(data: list[StudyRows]) -> dict[str, str]:
    first = data[0].objectives
    differ = [s for s in data[1:] if s.objectives != first]
    if differ:
        listed = "; ".join(f"{s.label}: {_objective_text(s.objectives)}" for s in data)
        raise SrSearchError(f"these studies optimise different objectives ({listed}); their fronts are not "
                            f"comparable. Compare them on objectives every study has, e.g. "
                            f"sr-search compare ... --objective psnr_y=max --objective params_deploy=min")
    return dict(first)


def _flags(data: list[StudyRows], objectives: Mapping[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Per study, (what differs, the message) for each way it is incomparable with the first study named (the
    yardstick)."""
    first = data[0]
    timed = ", ".join([c for c in objectives if c in TIMED] or list(TIMED[:3]))
    flags: dict[str, list[tuple[str, str]]] = {s.label: [] for s in data}
    for s in data:
        found = flags[s.label]
        devices = s.values("timing_device")
        if len(devices) > 1:
            found.append(("timing devices", (f"{s.label}: timed on {len(devices)} devices ({', '.join(devices)}); "
                                             f"{timed} mix them")))
        if s is first:
            continue
        if _key(s.protocol) != _key(first.protocol):
            found.append(("timing protocol", (f"{s.label}: timing protocol {s.protocol_text()}, {first.label} used "
                                              f"{first.protocol_text()}; not comparable: {timed}")))
        mine, theirs = set(devices), set(first.values("timing_device"))
        if mine and theirs and mine != theirs:
            found.append(("timing device", (f"{s.label}: timed on {', '.join(sorted(mine))}, {first.label} on "
                                            f"{', '.join(sorted(theirs))}; not comparable: {timed}")))
        for column, what in (("scale", "scale"), ("bicubic_psnr_y", "bicubic PSNR-Y")):
            mine_v, theirs_v = _rounded(s.values(column)), _rounded(first.values(column))
            if mine_v and theirs_v and mine_v != theirs_v:
                found.append((what, (f"{s.label}: {what} {_join(mine_v)}, {first.label} {_join(theirs_v)} (other "
                                     f"validation data or scale); PSNR values are not comparable")))
    return flags


# --- tables ----------------------------------------------------------------------------------------------------


def _front_table(fronts: dict[str, pd.DataFrame], objectives: Mapping[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every study's front in one table, each point with the points of other fronts that dominate it; and the
    count matrix [a, b] = how many of b's front points a's front dominates."""
    labels = list(fronts)
    counts = pd.DataFrame(0, index=labels, columns=labels)
    parts = []
    for b in labels:
        front = fronts[b].assign(study=b)
        beaten_by = [[] for _ in range(len(front))]
        for a in labels:
            if a == b or fronts[a].empty or front.empty:
                continue
            matrix = dominance(fronts[a], front, objectives)
            counts.loc[a, b] = int(matrix.any(axis=0).sum())
            for j in range(len(front)):
                ids = fronts[a]["trial_id"].to_numpy()[matrix[:, j]]
                if len(ids):
                    beaten_by[j].append(f"{a} {','.join(map(str, ids))}")
        parts.append(front.assign(dominated_by=["; ".join(x) for x in beaten_by], quality_flag=_flag_text(front)))
    present = [c for c in _FRONT_COLUMNS if any(c in p.columns and p[c].notna().any() for p in parts)]
    columns = [*dict.fromkeys(["study", "trial_id", *present]), *objectives]
    columns += [c for c in ("params_deploy", "timing_protocol", "quality_flag", "dominated_by") if c not in columns]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return table.reindex(columns=columns), counts


def _study_row(s: StudyRows, front: pd.DataFrame, volume: float, flags: list[tuple[str, str]]) -> dict[str, Any]:
    return {"study": s.label, "folder": str(s.root), "mode": s.mode, "trials": len(s.rows),
            "complete": len(s.complete),
            **{name: int(n) for name, n in quality_flags(s.rows)[list(FLAGS)].sum().items()},
            "front": len(front), "hypervolume": volume,
            "timing_protocol": s.protocol_text(), "timing_device": ", ".join(s.values("timing_device")) or None,
            "flag": ", ".join(f"{kind} differs" for kind, _ in flags) or None,
            "flag_detail": "; ".join(message.split(": ", 1)[1] for _, message in flags) or None}


def _confirms(s: StudyRows, data: list[StudyRows]) -> str | None:
    """The label of the compared study `s` confirms (its folder when that study is not compared), or None."""
    source = confirmed_source(s.root)
    if source is None:
        return None
    return next((d.label for d in data if d.root.resolve() == source.resolve()), str(source))


def _flag_text(front: pd.DataFrame) -> list[str | None]:
    """Per front point, 'collapsed' (a defect of the training), 'below bicubic' (under-trained), or None."""
    marked = quality_flags(front)
    return ["collapsed" if c else "below bicubic" if b else None
            for b, c in zip(marked["below_bicubic"], marked["collapsed"], strict=True)]


def _levels(data: list[StudyRows]) -> pd.DataFrame | None:
    """Per (factor, level), each ablation study's mean PSNR-Y and throughput over seeds, side by side."""
    tables = []
    for s in data:
        if s.mode == "ablation":
            table = ablation_table(s.rows).set_index(["factor", "level"])
            tables.append(table[["psnr_y_mean", "throughput_mean"]].rename(
                columns={"psnr_y_mean": f"psnr_y [{s.label}]", "throughput_mean": f"throughput [{s.label}]"}))
    if not tables:
        return None
    order = list(dict.fromkeys(key for t in tables for key in t.index))  # each study's level order, not sorted text
    merged = pd.concat(tables, axis=1).reindex(pd.MultiIndex.from_tuples(order, names=["factor", "level"]))
    quality = [c for c in merged.columns if c.startswith("psnr_y")]
    return merged[[*quality, *(c for c in merged.columns if c.startswith("throughput"))]].reset_index()


# --- small helpers ---------------------------------------------------------------------------------------------


def _frame_text(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)"
    shown = df.copy()
    for column in shown.columns:
        shown[column] = shown[column].map(lambda v, c=column: _cell(c, v))
    return shown.to_string(index=False)


def _key(protocol: Any) -> str:
    return json.dumps(protocol, sort_keys=True, default=str)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rounded(values: list) -> set:
    return {round(float(v), 3) if isinstance(v, (float, np.floating)) else v for v in values}


def _join(values: set) -> str:
    return ", ".join(str(v) for v in sorted(values, key=str))


def _size(size: Any) -> str:
    return "x".join(str(v) for v in size) if isinstance(size, (list, tuple)) else str(size)


def _objective_text(objectives: Mapping[str, str]) -> str:
    return ", ".join(f"{n} ({d})" for n, d in objectives.items())
