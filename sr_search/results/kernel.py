"""The Pareto kernel on plain numpy arrays (minimisation everywhere): non-dominated ranks, the first front, crowding
distance, an incremental front and the hypervolume history's staircase. No pandas, so a process that only reads a
progress file (`sr-search status`) or the driver's progress line can use it cheaply; `pareto` is the DataFrame API on
top of it. No n x n matrix anywhere: two objectives are O(n log n) by sort and sweep.
"""

from __future__ import annotations

import bisect

import numpy as np

from ..errors import SrSearchError


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


def _staircase_history(points: np.ndarray, mask: np.ndarray, order: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume after each row of `order` (minimisation points, rows outside `mask` add nothing), keeping the
    non-dominated staircase of the rows so far (x ascending, y descending) instead of re-sorting every prefix: a row
    that an earlier one weakly dominates changes nothing; otherwise it goes in, the rows it dominates go out, and the
    area is summed again over the staircase's part inside the reference box only when that part changed. The sum is
    `hypervolume_2d`'s own (same slabs, same order), so every value equals the prefix's recomputed hypervolume."""
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


class IncrementalFront:
    """The first front of a growing set of minimisation points, one `add` at a time in O(front size): a point that a
    member dominates is left out; otherwise it goes in and the members it dominates leave. Equal points are all kept
    (neither dominates the other), as `front_mask` keeps them; `len` is the front's size."""

    def __init__(self, k: int) -> None:
        self._rows = np.empty((8, k))
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def points(self) -> np.ndarray:
        return self._rows[: self._n]

    def add(self, point: np.ndarray) -> bool:
        """Add a finite point; True when it is on the front now."""
        p = np.asarray(point, dtype=float)
        rows = self._rows[: self._n]
        if self._n and ((rows <= p).all(axis=1) & (rows < p).any(axis=1)).any():
            return False
        keep = ~((p <= rows).all(axis=1) & (p < rows).any(axis=1))
        if not keep.all():
            kept = rows[keep]
            self._n = len(kept)
            self._rows[: self._n] = kept
        if self._n == len(self._rows):
            self._rows = np.concatenate([self._rows, np.empty_like(self._rows)])
        self._rows[self._n] = p
        self._n += 1
        return True
