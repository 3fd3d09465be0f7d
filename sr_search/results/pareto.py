"""Pareto fronts of a results table: non-dominated sorting, 2-D hypervolume, knee point.

Pure numpy/pandas so the CLI, the report and a user's notebook agree on what "the front" is. Only
rows with ``status == 'complete'`` and finite values for every objective take part: an infeasible,
failed or pruned trial never dominates anything (its numbers are partial or missing).
Directions are per objective, ``'max'`` or ``'min'``; internally everything is minimised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import SrSearchError

DIRECTIONS = ("max", "min")
#: Rows of a domination matrix built per chunk, to bound memory at chunk * n booleans per objective.
_CHUNK = 512


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
    ranks = front_ranks(df, objectives)
    front = df.loc[ranks.eq(0)]
    first, direction = next(iter(objectives.items()))
    return front.sort_values(first, ascending=(direction == "min"), kind="stable")


def front_ranks(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """Non-dominated sorting rank per row: 0 for the front, 1 for the front once it is removed, ...

    Excluded rows (not complete, or a NaN/inf objective) get NaN. Deb et al.'s domination counting
    (NSGA-II): one domination matrix, then peel fronts by decrementing counts.
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


def hypervolume_history(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    reference: Mapping[str, float] | Sequence[float] | None = None,
    order_by: str = "trial_id",
) -> pd.DataFrame:
    """Hypervolume of the front of the first k trials, for k = 1..len(df), trials ordered by `order_by`.

    One row per trial (failed and infeasible ones too: they add nothing, which is the point of the
    plot), with columns `order_by`, ``trial`` (1-based position) and ``hypervolume``. String ids are
    ordered naturally ('t9' before 't10'). `reference` defaults to `default_reference`.
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
    mask = eligible_mask(df, objectives).to_numpy()
    if reference is None:
        reference = default_reference(df, objectives) if mask.any() else {n: 0.0 for n in objectives}
    ref = _reference_vector(reference, objectives)
    directions = list(objectives.values())
    values = _objective_values(df, objectives)

    order = _natural_order(df[order_by])
    front = np.empty((0, 2))
    volume = 0.0
    history = []
    signs = _signs(directions, expected=2)
    for position in order:
        if mask[position]:
            point = values[position]
            candidate = np.vstack([front, point])
            minimised = candidate * signs
            front = candidate[nondominated_ranks(minimised) == 0]
            volume = hypervolume_2d(front, ref, directions)
        history.append(volume)
    return pd.DataFrame(
        {
            order_by: df[order_by].to_numpy()[order],
            "trial": np.arange(1, len(order) + 1),
            "hypervolume": np.asarray(history, dtype=float),
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


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """Front rank of each row of a finite (n, k) minimisation array (0 = the front; Deb et al.'s domination
    counting, as NSGA-II)."""
    n = len(points)
    dominates = np.zeros((n, n), dtype=bool)  # dominates[i, j]: i dominates j
    for start in range(0, n, _CHUNK):
        block = points[start : start + _CHUNK, None, :]
        no_worse = (block <= points[None, :, :]).all(axis=2)
        better = (block < points[None, :, :]).any(axis=2)
        dominates[start : start + _CHUNK] = no_worse & better
    counts = dominates.sum(axis=0)
    ranks = np.full(n, -1)
    current = np.flatnonzero(counts == 0)
    rank = 0
    while len(current):
        ranks[current] = rank
        counts = counts - dominates[current].sum(axis=0)
        counts[ranks >= 0] = -1
        current = np.flatnonzero(counts == 0)
        rank += 1
    return ranks


def crowding_distance(points: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within its front (each objective's extremes: infinity), for a
    minimisation array and its `nondominated_ranks`. Larger: less crowded."""
    out = np.zeros(len(points))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        if len(members) <= 2:
            out[members] = np.inf
            continue
        for m in range(points.shape[1]):
            order = members[np.argsort(points[members, m], kind="stable")]
            span = points[order[-1], m] - points[order[0], m]
            out[order[0]] = out[order[-1]] = np.inf
            if span > 0:
                out[order[1:-1]] += (points[order[2:], m] - points[order[:-2], m]) / span
    return out


def _natural_key(value: object) -> tuple:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    parts = re.split(r"(\d+)", str(value))
    return (1, 0.0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p))


def _natural_order(values: pd.Series) -> np.ndarray:
    keys = [_natural_key(v) for v in values.tolist()]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=int)
