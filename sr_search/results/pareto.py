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
    signs = _signs(directions, expected=2)
    history = _staircase_history(values * signs, mask, order, np.asarray(ref, dtype=float) * signs)
    return pd.DataFrame(
        {
            order_by: df[order_by].to_numpy()[order],
            "trial": np.arange(1, len(order) + 1),
            "hypervolume": history,
        }
    )


def _staircase_history(points: np.ndarray, mask: np.ndarray, order: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume after each row of `order` (minimisation points, rows outside `mask` add nothing), keeping the
    non-dominated staircase of the rows so far (x ascending, y descending) instead of re-sorting every prefix: a row
    that an earlier one weakly dominates changes nothing; otherwise it goes in, the rows it dominates go out, and the
    area is summed again over the staircase's part inside the reference box only when that part changed. The sum is
    `hypervolume_2d`'s own (same slabs, same order), so every value equals the prefix's recomputed hypervolume."""
    import bisect

    xs: list[float] = []  # the staircase: x strictly ascending, y strictly descending
    ys: list[float] = []
    history = np.zeros(len(order))
    volume = 0.0
    for step, position in enumerate(order.tolist()):
        if mask[position]:
            x, y = float(points[position, 0]), float(points[position, 1])
            at = bisect.bisect_right(xs, x)  # rows before `at` have x <= p.x; the last of them has their lowest y
            if not (at and ys[at - 1] <= y):
                end = at
                while end < len(xs) and ys[end] >= y:  # rows with x >= p.x and y >= p.y: dominated by p
                    end += 1
                if at and xs[at - 1] == x:  # same x, higher y (else p were dominated): dominated by p
                    at -= 1
                xs[at:end], ys[at:end] = [x], [y]
                if x < ref[0] and y < ref[1]:
                    volume = _staircase_volume(xs, ys, ref)
        history[step] = volume
    return history


def _staircase_volume(xs: list[float], ys: list[float], ref: np.ndarray) -> float:
    low = _first_below(ys, ref[1])  # first row with y < ref y
    high = int(np.searchsorted(xs, ref[0], side="left"))  # rows with x < ref x
    if high <= low:
        return 0.0
    stairs = np.column_stack([xs[low:high], ys[low:high]])
    right = np.append(stairs[1:, 0], ref[0])
    return float(np.sum((right - stairs[:, 0]) * (ref[1] - stairs[:, 1])))


def _first_below(values: list[float], bound: float) -> int:
    """First index of a strictly descending list whose value is below `bound`."""
    low, high = 0, len(values)
    while low < high:
        mid = (low + high) // 2
        if values[mid] < bound:
            high = mid
        else:
            low = mid + 1
    return low


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
    """Front rank of each row of an (n, k) minimisation array: 0 = the front, 1 = the front once it is removed, ...

    The same ranks as Deb et al.'s domination counting (NSGA-II) without its n x n matrix. Rows are visited in
    lexicographic order, so every row that dominates another comes before it; a row's rank is the number of fronts
    built so far that hold a row dominating it (monotone in the front index: if a row of front r + 1 dominates it, a
    row of front r does too), found by binary search. Two objectives: each front is summarised by its lowest second
    value, so one step is O(log n) and the whole sort O(n log n). k > 2: each probe tests the front's rows (numpy),
    O(n log n) probes and at most O(n^2 k) comparisons, O(n k) memory (Zhang et al., ENS-BS, 2015). One objective:
    the dense rank. Equal rows get equal ranks (neither dominates the other); a row with a NaN is compared false with
    everything, so it dominates nothing, nothing dominates it, and its rank is 0.
    """
    points = np.asarray(points, dtype=float)
    n = len(points)
    ranks = np.zeros(n, dtype=int)
    if n == 0:
        return ranks
    if points.ndim != 2:
        raise SrSearchError(f"nondominated_ranks: need an (n, k) array; got shape {points.shape}")
    usable = ~np.isnan(points).any(axis=1)
    if not usable.all():
        ranks[usable] = nondominated_ranks(points[usable])
        return ranks
    k = points.shape[1]
    if k == 0:
        return ranks
    if k == 1:
        return np.unique(points[:, 0], return_inverse=True)[1].reshape(-1).astype(int)
    order = np.lexsort(points.T[::-1])  # first column, then second, ...
    if k == 2:
        return _ranks_2d(points, order)
    return _ranks_kd(points, order)


def _ranks_2d(points: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Sort-and-sweep: rows by (x, y); front r is summarised by (lowest y, its x). An earlier row q dominates p iff
    q.y < p.y, or q.y == p.y with q.x < p.x (equal rows do not dominate), i.e. iff (q.y, q.x) < (p.y, p.x); the
    front's row of lowest y decides, and within one front all rows of that y share one x."""
    import bisect

    ranks = np.empty(len(points), dtype=int)
    fronts: list[tuple[float, float]] = []  # per front: (lowest y, x of that row)
    xs, ys = points[order, 0].tolist(), points[order, 1].tolist()
    for position, x, y in zip(order.tolist(), xs, ys, strict=True):
        key = (y, x)
        rank = bisect.bisect_left(fronts, key)
        if rank == len(fronts):
            fronts.append(key)
        else:
            fronts[rank] = key  # no row of this front dominates p: its lowest y is >= p.y
        ranks[position] = rank
    return ranks


def _ranks_kd(points: np.ndarray, order: np.ndarray) -> np.ndarray:
    """ENS-BS for k > 2: binary search over the fronts, each probe one vectorised domination test of the front."""
    n, k = points.shape
    ranks = np.empty(n, dtype=int)
    members: list[np.ndarray] = []  # per front: a buffer of its rows, grown by doubling
    sizes: list[int] = []

    def dominated_by(front: int, p: np.ndarray) -> bool:
        rows = members[front][: sizes[front]]
        return bool(((rows <= p).all(axis=1) & (rows < p).any(axis=1)).any())

    for position in order.tolist():
        p = points[position]
        low, high = 0, len(members)
        while low < high:  # the first front that holds no row dominating p
            mid = (low + high) // 2
            if dominated_by(mid, p):
                low = mid + 1
            else:
                high = mid
        if low == len(members):
            members.append(np.empty((4, k)))
            sizes.append(0)
        if sizes[low] == len(members[low]):
            members[low] = np.concatenate([members[low], np.empty_like(members[low])])
        members[low][sizes[low]] = p
        sizes[low] += 1
        ranks[position] = low
    return ranks


def front_mask(points: np.ndarray) -> np.ndarray:
    """Rows of an (n, k) minimisation array on the first front (rank 0 of `nondominated_ranks`), duplicates of a
    front row included. Two objectives: one vectorised sweep (sort, running minimum)."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or np.isnan(points).any():
        return nondominated_ranks(points) == 0
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((points[:, 1], points[:, 0]))
    x, y = points[order, 0], points[order, 1]
    # a row is on the front iff its y is below every earlier row's y, unless an earlier row is equal to it
    first = np.ones(n, dtype=bool)
    first[1:] = (x[1:] != x[:-1]) | (y[1:] != y[:-1])
    earlier = np.minimum.accumulate(np.concatenate(([np.inf], y[:-1])))
    on = y < earlier
    on[0] = True
    group = np.cumsum(first) - 1  # the equal rows' first occurrence decides for all of them
    on = on[np.flatnonzero(first)][group]
    out = np.empty(n, dtype=bool)
    out[order] = on
    return out


def crowding_distance(points: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within its front (each objective's extremes: infinity), for a
    minimisation array and its `nondominated_ranks`. Larger: less crowded."""
    out = np.zeros(len(points))
    by_rank = np.argsort(ranks, kind="stable")
    bounds = np.flatnonzero(np.diff(np.asarray(ranks)[by_rank])) + 1
    for members in np.split(by_rank, bounds):  # one front at a time, its rows in index order
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
