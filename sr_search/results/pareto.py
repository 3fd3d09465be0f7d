"""Pareto fronts of a results table: non-dominated sorting, 2-D hypervolume, knee point.

Pure numpy/pandas so the CLI, the report and a user's notebook agree on what "the front" is. Only
rows with ``status == 'complete'`` and finite values for every objective take part: an infeasible,
failed or pruned trial never dominates anything (its numbers are partial or missing).
Directions are per objective, ``'max'`` or ``'min'``; internally everything is minimised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import SrSearchError
from .kernel import (  # noqa: F401 - the kernel's public names stay importable from here
    IncrementalFront,
    _staircase_history,
    crowding_distance,
    front_mask,
    nondominated_ranks,
)

DIRECTIONS = ("max", "min")


def eligible_mask(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """Rows that may enter a front: status 'complete' and finite values for every objective.

    A frame without a ``status`` column (e.g. a user's own subset) counts every row as complete.
    """
    _check_objectives(df, objectives)
    mask = pd.Series(True, index=df.index)
    if "status" in df.columns:
        mask &= df["status"].astype("string").eq("complete").fillna(False).astype(bool)
    values = _objective_values(df, objectives)
    mask &= np.isfinite(values).all(axis=1)
    return mask


def pareto_front(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The non-dominated eligible rows of `df` (original index kept), best first in the first objective.

    Duplicates of a non-dominated point are all kept: neither dominates the other.
    """
    mask = eligible_mask(df, objectives).to_numpy()
    on_front = np.zeros(len(df), dtype=bool)
    on_front[mask] = front_mask(_minimisation_points(df, objectives)[mask])
    front = df.loc[on_front]
    first, direction = next(iter(objectives.items()))
    return front.sort_values(first, ascending=(direction == "min"), kind="stable")


def front_ranks(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """Non-dominated sorting rank per row: 0 for the front, 1 for the front once it is removed, ...

    Excluded rows (not complete, or a NaN/inf objective) get NaN. The ranks of Deb et al.'s domination counting
    (NSGA-II), computed in O(n log n) for two objectives (`nondominated_ranks`).
    """
    mask = eligible_mask(df, objectives).to_numpy()
    ranks = np.full(len(df), np.nan)
    points = _minimisation_points(df, objectives)[mask]
    if len(points):
        ranks[mask] = nondominated_ranks(points)
    return pd.Series(ranks, index=df.index, name="front_rank")


def dominance(a: pd.DataFrame, b: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """``out[i, j]``: row i of `a` dominates row j of `b` (no worse in every objective, better in one).

    For comparing the fronts of two studies; rows with a NaN objective dominate nothing and are dominated by
    nothing (a comparison with NaN is false).
    """
    _check_objectives(a, objectives)
    _check_objectives(b, objectives)
    pa_, pb = _minimisation_points(a, objectives), _minimisation_points(b, objectives)
    no_worse = (pa_[:, None, :] <= pb[None, :, :]).all(axis=2)
    better = (pa_[:, None, :] < pb[None, :, :]).any(axis=2)
    return no_worse & better


def hypervolume_2d(
    points: np.ndarray | Sequence[Sequence[float]] | pd.DataFrame,
    reference: Sequence[float],
    directions: Sequence[str],
) -> float:
    """Area dominated by `points` and bounded by `reference`, for two objectives.

    `points` is (n, 2); `directions` says per column whether larger ('max') or smaller ('min') is
    better. Points that do not strictly beat the reference in both objectives, and non-finite
    points, add nothing; dominated points are allowed and add nothing either.
    """
    signs = _signs(directions, expected=2)
    ref = np.asarray(reference, dtype=float).reshape(-1)
    if ref.shape != (2,) or not np.isfinite(ref).all():
        raise SrSearchError(f"hypervolume reference: need two finite numbers; got {list(reference)!r}")
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        return 0.0
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise SrSearchError(f"hypervolume points: need an (n, 2) array; got shape {pts.shape}")
    pts = pts * signs
    ref = ref * signs
    pts = pts[np.isfinite(pts).all(axis=1) & (pts < ref).all(axis=1)]
    if not len(pts):
        return 0.0
    # Sweep along the first objective; a point adds a slab only if it beats every earlier y.
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    pts = pts[order]
    keep = pts[:, 1] < np.minimum.accumulate(np.concatenate(([np.inf], pts[:-1, 1])))
    stairs = pts[keep]
    right = np.append(stairs[1:, 0], ref[0])
    return float(np.sum((right - stairs[:, 0]) * (ref[1] - stairs[:, 1])))


def default_reference(df: pd.DataFrame, objectives: Mapping[str, str]) -> dict[str, float]:
    """A reference point just worse than every eligible row: the worst value, pushed 10% of the range
    (or 10% of its magnitude, or 1, when all values are equal) further in the worse direction, but
    never past zero for a 'max' objective whose values are all positive (throughput, PSNR).

    Stated in the report, so hypervolumes of different studies are only compared with the same one.
    """
    mask = eligible_mask(df, objectives).to_numpy()
    if not mask.any():
        raise SrSearchError(
            f"no reference point: no complete trial has finite values for {', '.join(objectives)}"
        )
    values = _objective_values(df, objectives)[mask]
    reference = {}
    for column, (name, direction) in zip(values.T, objectives.items(), strict=True):
        span = float(column.max() - column.min())
        margin = 0.1 * span if span > 0 else (0.1 * abs(float(column[0])) or 1.0)
        if direction == "max":
            worst = float(column.min())
            reference[name] = max(worst - margin, 0.0) if worst > 0 else worst - margin
        else:
            reference[name] = float(column.max()) + margin
    return reference


# --- the one hypervolume rule (report, compare and the search benchmarks) ------------------------------------------

#: objectives whose hypervolume reference is 0 in every study: the worst value that still means something
ZERO_REFERENCE = ("psnr_gain", "ssim_y", "ntire_score", "throughput", "mpix_per_s")
#: bicubic PSNR-Y values this close come from the same images and scale (the unshuffle factor's crop differs)
BICUBIC_CROP_DB = 0.05
#: the words each way of choosing a reference value is printed with
RULE_GIVEN, RULE_BICUBIC, RULE_ZERO, RULE_WORST = ("given (--reference)", "bicubic PSNR-Y", "fixed at 0",
                                                   "worst + 10% of the range")


@dataclass(frozen=True)
class HypervolumeReference:
    """A hypervolume reference point and, per objective, how its value was chosen (`hypervolume_reference`)."""

    values: dict[str, float]
    rules: dict[str, str]

    def text(self, cell: Callable[[str, float], str] | None = None) -> str:
        """'psnr_y 27.160 (bicubic PSNR-Y), throughput 0 (fixed at 0)', each value written by `cell(name, value)`
        (the report and `compare` pass the tables' own formatter, so both print the same line)."""
        cell = cell or (lambda _name, value: _ref_number(value))
        return ", ".join(f"{name} {cell(name, value)} ({self.rules[name]})" for name, value in self.values.items())


def hypervolume_reference(
    df: pd.DataFrame, objectives: Mapping[str, str], given: Mapping[str, float] | None = None
) -> HypervolumeReference:
    """The reference point of a hypervolume, by one rule for every command that prints one:

    - a value `given` for an objective (`--reference NAME=VALUE`) is used as is;
    - PSNR-Y: the bicubic PSNR-Y of the rows (`bicubic_psnr_y`, one value when every row was measured on the same
      images at the same scale; rows whose pixel-unshuffle crops the images differently differ by a few thousandths
      of a dB, and the highest is taken): a candidate that does not beat bicubic adds nothing;
    - PSNR gain, SSIM-Y, NTIRE score, throughput and Mpixel/s: 0 (`ZERO_REFERENCE`);
    - anything else (latency, parameters, MACs, memory: costs with no natural worst value), and PSNR-Y when the rows
      hold several bicubic values: the worst value among the complete rows pushed 10% of their range further
      (`default_reference`). It depends on the rows, so pin it with `given` to compare across sets of studies.

    `df` is one study's rows (the report) or every compared study's rows together (`compare`); the fixed values do
    not depend on it, so adding a study does not move them.
    """
    given = dict(given or {})
    unknown = [name for name in given if name not in objectives]
    if unknown:
        raise SrSearchError(f"reference: {', '.join(unknown)} is not an objective; objectives: "
                            f"{', '.join(objectives)}")
    bicubic: set[float] = set()
    if "bicubic_psnr_y" in df.columns:
        values = pd.to_numeric(df["bicubic_psnr_y"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bicubic = {round(float(v), 6) for v in values[np.isfinite(values)]}
    worst: dict[str, float] | None = None
    values_out, rules = {}, {}
    for name in objectives:
        if name in given:
            values_out[name], rules[name] = float(given[name]), RULE_GIVEN
        elif name == "psnr_y" and bicubic and max(bicubic) - min(bicubic) <= BICUBIC_CROP_DB:
            values_out[name], rules[name] = max(bicubic), RULE_BICUBIC
        elif name in ZERO_REFERENCE:
            values_out[name], rules[name] = 0.0, RULE_ZERO
        else:
            if worst is None:
                worst = (default_reference(df, objectives) if eligible_mask(df, objectives).any()
                         else {n: np.nan for n in objectives})
            values_out[name], rules[name] = float(worst[name]), RULE_WORST
    return HypervolumeReference(values_out, rules)


def counted_mask(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """Rows a hypervolume counts: eligible (complete, finite objectives; so never a pruned trial), not below bicubic
    and not collapsed (`results.quality_flags`)."""
    from .quality_flags import flags

    marked = flags(df)
    return eligible_mask(df, objectives) & ~marked["below_bicubic"] & ~marked["collapsed"]


def study_hypervolume(
    df: pd.DataFrame, objectives: Mapping[str, str], reference: HypervolumeReference | Mapping[str, float]
) -> float:
    """Hypervolume of the counted rows of one study (`counted_mask`) against `reference`; NaN when the reference
    has no finite value for an objective. The number the report and `compare` print for a study."""
    values = reference.values if isinstance(reference, HypervolumeReference) else dict(reference)
    ref = _reference_vector(values, objectives)
    if len(objectives) != 2 or not np.isfinite(ref).all():
        return float("nan")
    rows = df[counted_mask(df, objectives).to_numpy()]
    return hypervolume_2d(_objective_values(rows, objectives), ref, list(objectives.values()))


def _ref_number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def hypervolume_history(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    reference: Mapping[str, float] | Sequence[float] | None = None,
    order_by: str = "trial_id",
) -> pd.DataFrame:
    """Hypervolume of the front of the first k trials, for k = 1..len(df), trials ordered by `order_by`.

    One row per trial (failed and infeasible ones too: they add nothing, which is the point of the
    plot), with columns `order_by`, ``trial`` (1-based position) and ``hypervolume``. String ids are
    ordered naturally ('t9' before 't10'). Only the rows a hypervolume counts add to it (`counted_mask`: no pruned,
    below-bicubic or collapsed trial), so the last value is `study_hypervolume`'s. `reference` defaults to
    `hypervolume_reference`'s.
    """
    if len(objectives) != 2:
        raise SrSearchError(
            f"hypervolume needs exactly two objectives; got {len(objectives)}: {', '.join(objectives)}"
        )
    if order_by not in df.columns:
        raise SrSearchError(
            f"hypervolume history: order_by column {order_by!r} is not in the results; "
            f"columns: {', '.join(map(str, df.columns))}"
        )
    mask = counted_mask(df, objectives).to_numpy()
    if reference is None:
        reference = (hypervolume_reference(df, objectives).values if eligible_mask(df, objectives).any()
                     else {n: 0.0 for n in objectives})
    ref = _reference_vector(reference, objectives)
    directions = list(objectives.values())
    values = _objective_values(df, objectives)

    order = _natural_order(df[order_by])
    signs = _signs(directions, expected=2)
    history = _staircase_history(values * signs, mask, order, np.asarray(ref, dtype=float) * signs)
    return pd.DataFrame(
        {
            order_by: df[order_by].to_numpy()[order],
            "trial": np.arange(1, len(order) + 1),
            "hypervolume": history,
        }
    )


def knee_point(front: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """The front's best trade-off row.

    Objectives are normalised to [0, 1] over the front (0 = best). With two objectives it is the
    point farthest from the line joining the two extremes, on the ideal side (the "knee"); with one
    objective, with more than two, or when the front is a straight line, it is the point closest to
    the ideal point. `front` may also be a whole results table: its front is taken first.
    """
    front = pareto_front(front, objectives)
    if not len(front):
        raise SrSearchError(
            f"no knee point: no complete trial has finite values for {', '.join(objectives)}"
        )
    pts = _minimisation_points(front, objectives)
    low, high = pts.min(axis=0), pts.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    norm = (pts - low) / span
    choice = int(np.argmin(np.linalg.norm(norm, axis=1)))
    if len(objectives) == 2 and len(front) > 2:
        a = norm[np.argmin(norm[:, 0])]
        b = norm[np.argmin(norm[:, 1])]
        direction = b - a
        length = float(np.hypot(*direction))
        if length > 0:
            # Signed distance, positive towards the ideal point (0, 0).
            distance = (direction[1] * (norm[:, 0] - a[0]) - direction[0] * (norm[:, 1] - a[1])) / length
            if distance.max() > 1e-12:
                choice = int(np.argmax(distance))
    return front.iloc[choice]


# --- helpers -------------------------------------------------------------------------------------


def _check_objectives(df: pd.DataFrame, objectives: Mapping[str, str]) -> None:
    if not isinstance(objectives, Mapping) or not objectives:
        raise SrSearchError(
            f"objectives: need a non-empty mapping of column -> 'max'|'min'; got {objectives!r}"
        )
    for name, direction in objectives.items():
        if direction not in DIRECTIONS:
            raise SrSearchError(
                f"objective {name!r}: direction {direction!r} is not allowed; allowed: max, min"
            )
        if name not in df.columns:
            raise SrSearchError(
                f"objective {name!r} is not a column of the results; columns: {', '.join(map(str, df.columns))}"
            )


def _objective_values(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    columns = []
    for name in objectives:
        try:
            columns.append(pd.to_numeric(df[name], errors="raise").to_numpy(dtype=float, na_value=np.nan))
        except (ValueError, TypeError):
            raise SrSearchError(
                f"objective {name!r}: the column is not numeric (e.g. {df[name].iloc[0]!r})"
            ) from None
    return np.column_stack(columns) if columns else np.empty((len(df), 0))


def _signs(directions: Sequence[str], expected: int | None = None) -> np.ndarray:
    directions = list(directions)
    if expected is not None and len(directions) != expected:
        raise SrSearchError(f"directions: need {expected} of 'max'|'min'; got {directions!r}")
    for direction in directions:
        if direction not in DIRECTIONS:
            raise SrSearchError(f"direction {direction!r} is not allowed; allowed: max, min")
    return np.array([-1.0 if d == "max" else 1.0 for d in directions])


def _minimisation_points(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    return _objective_values(df, objectives) * _signs(list(objectives.values()))


def _reference_vector(reference: Mapping[str, float] | Sequence[float], objectives: Mapping[str, str]) -> list[float]:
    if isinstance(reference, Mapping):
        missing = [name for name in objectives if name not in reference]
        if missing:
            raise SrSearchError(
                f"hypervolume reference: no value for {', '.join(missing)}; got {dict(reference)!r}"
            )
        return [float(reference[name]) for name in objectives]
    return [float(v) for v in reference]


def _natural_key(value: object) -> tuple:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    parts = re.split(r"(\d+)", str(value))
    return (1, 0.0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p))


def _natural_order(values: pd.Series) -> np.ndarray:
    keys = [_natural_key(v) for v in values.tolist()]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=int)
