"""Front, ranks, hypervolume and knee against brute force and hand-computed areas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from sr_search.errors import SrSearchError
from sr_search.results.pareto import (
    default_reference,
    front_ranks,
    hypervolume_2d,
    hypervolume_history,
    knee_point,
    pareto_front,
)

STATUSES = ["complete", "complete", "complete", "infeasible", "failed", "pruned"]


def random_results(rng: np.random.Generator, n: int, k: int, nan_rate: float = 0.1) -> pd.DataFrame:
    """Small-integer objectives so duplicates and ties are frequent; some NaN/inf; mixed statuses."""
    data = {f"o{j}": rng.integers(0, 6, size=n).astype(float) for j in range(k)}
    for j in range(k):
        holes = rng.random(n) < nan_rate
        data[f"o{j}"][holes] = rng.choice([np.nan, np.inf, -np.inf], size=holes.sum())
    data["status"] = rng.choice(STATUSES, size=n)
    data["trial_id"] = [f"t{i}" for i in range(n)]
    # A shuffled, non-default index: results must keep the caller's labels.
    return pd.DataFrame(data, index=rng.permutation(np.arange(100, 100 + n)))


def brute_eligible(df: pd.DataFrame, objectives: dict[str, str]) -> list:
    keep = []
    for label, row in df.iterrows():
        values = [row[name] for name in objectives]
        if row["status"] == "complete" and all(math.isfinite(v) for v in values):
            keep.append(label)
    return keep


def brute_dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """a dominates b: no worse in every objective, strictly better in one."""
    no_worse = all((x >= y) if d == "max" else (x <= y) for x, y, d in zip(a, b, directions))
    better = any((x > y) if d == "max" else (x < y) for x, y, d in zip(a, b, directions))
    return no_worse and better


def brute_ranks(df: pd.DataFrame, objectives: dict[str, str]) -> dict:
    directions = list(objectives.values())
    remaining = {label: [df.at[label, n] for n in objectives] for label in brute_eligible(df, objectives)}
    ranks, rank = {}, 0
    while remaining:
        front = [
            a for a, va in remaining.items()
            if not any(brute_dominates(vb, va, directions) for b, vb in remaining.items() if b != a)
        ]
        for label in front:
            ranks[label] = rank
            del remaining[label]
        rank += 1
    return ranks


CASES = [
    (n, k, seed)
    for n, k in [(0, 2), (1, 1), (1, 2), (2, 2), (5, 1), (7, 3), (30, 2), (60, 2), (60, 3), (40, 4), (120, 2)]
    for seed in range(3)
]


@pytest.mark.parametrize(("n", "k", "seed"), CASES)
def test_front_and_ranks_match_brute_force(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(1000 * n + 10 * k + seed)
    df = random_results(rng, n, k)
    objectives = {f"o{j}": rng.choice(["max", "min"]) for j in range(k)}
    expected = brute_ranks(df, objectives)

    ranks = front_ranks(df, objectives)
    assert list(ranks.index) == list(df.index)
    for label in df.index:
        if label in expected:
            assert ranks[label] == expected[label], label
        else:
            assert np.isnan(ranks[label]), label

    front = pareto_front(df, objectives)
    assert sorted(front.index) == sorted(label for label, r in expected.items() if r == 0)
    assert front.columns.tolist() == df.columns.tolist()
    # Best first in the first objective.
    first, direction = next(iter(objectives.items()))
    values = front[first].to_numpy()
    assert (np.diff(values) <= 0).all() if direction == "max" else (np.diff(values) >= 0).all()


def test_duplicates_of_a_front_point_are_all_kept() -> None:
    df = pd.DataFrame(
        {
            "status": ["complete"] * 4,
            "psnr_y": [30.0, 30.0, 29.0, 31.0],
            "throughput": [100.0, 100.0, 90.0, 50.0],
        }
    )
    front = pareto_front(df, {"psnr_y": "max", "throughput": "max"})
    assert sorted(front.index) == [0, 1, 3]


def test_excluded_rows_never_dominate() -> None:
    """An infeasible/failed/pruned row with better numbers must not remove a complete one."""
    df = pd.DataFrame(
        {
            "status": ["complete", "infeasible", "failed", "pruned", "complete"],
            "psnr_y": [30.0, 40.0, 40.0, 40.0, np.nan],
            "throughput": [10.0, 1e6, 1e6, 1e6, 1e6],
        }
    )
    objectives = {"psnr_y": "max", "throughput": "max"}
    assert pareto_front(df, objectives).index.tolist() == [0]
    assert front_ranks(df, objectives).isna().tolist() == [False, True, True, True, True]


def test_bad_objectives_raise_naming_the_problem() -> None:
    df = pd.DataFrame({"status": ["complete"], "psnr_y": [30.0], "block": ["rep"]})
    with pytest.raises(SrSearchError, match=r"'latency'.*columns: status, psnr_y, block"):
        pareto_front(df, {"latency": "min"})
    with pytest.raises(SrSearchError, match=r"'psnr_y'.*'up'.*allowed: max, min"):
        pareto_front(df, {"psnr_y": "up"})
    with pytest.raises(SrSearchError, match=r"'block'.*not numeric"):
        front_ranks(df, {"block": "max"})
    with pytest.raises(SrSearchError, match="non-empty"):
        pareto_front(df, {})


# --- hypervolume -----------------------------------------------------------------------------------


def test_hypervolume_of_a_staircase_by_hand() -> None:
    # min/min: slabs x in [1,2) height 4-3, [2,3) height 4-2, [3,4) height 4-1 -> 1 + 2 + 3.
    points = [[1, 3], [2, 2], [3, 1]]
    assert hypervolume_2d(points, [4, 4], ["min", "min"]) == pytest.approx(6.0)
    # The same shape mirrored into max/max and mixed directions.
    assert hypervolume_2d([[-1, -3], [-2, -2], [-3, -1]], [-4, -4], ["max", "max"]) == pytest.approx(6.0)
    assert hypervolume_2d([[1, -3], [2, -2], [3, -1]], [4, -4], ["min", "max"]) == pytest.approx(6.0)


def test_hypervolume_single_rectangle_and_psnr_throughput() -> None:
    # One trial at 30 dB, 200 img/s against (28 dB, 50 img/s): a 2 x 150 rectangle.
    assert hypervolume_2d([[30.0, 200.0]], [28.0, 50.0], ["max", "max"]) == pytest.approx(300.0)
    # Two overlapping rectangles: 2x150 and 1x250 share 1x150 -> 300 + 250 - 150.
    assert hypervolume_2d([[30.0, 200.0], [29.0, 300.0]], [28.0, 50.0], ["max", "max"]) == pytest.approx(400.0)


def test_hypervolume_ignores_dominated_outside_and_nonfinite_points() -> None:
    base = hypervolume_2d([[1, 3], [2, 2], [3, 1]], [4, 4], ["min", "min"])
    noisy = [[1, 3], [2, 2], [3, 1], [2.5, 2.5], [2, 2], [5, 0], [0, 5], [np.nan, 0], [np.inf, 1], [4, 1]]
    assert hypervolume_2d(noisy, [4, 4], ["min", "min"]) == pytest.approx(base)
    assert hypervolume_2d(np.empty((0, 2)), [4, 4], ["min", "min"]) == 0.0
    assert hypervolume_2d([[5, 5]], [4, 4], ["min", "min"]) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_matches_unit_cell_count(seed: int) -> None:
    """Integer points: the area is the number of unit cells dominated by some point, counted cell by cell."""
    rng = np.random.default_rng(seed)
    directions = [rng.choice(["max", "min"]) for _ in range(2)]
    pts = rng.integers(0, 12, size=(rng.integers(1, 25), 2)).astype(float)
    ref = [(-1.0 if d == "max" else 12.0) for d in directions]
    cells = 0
    for cx, cy in itertools.product(range(-1, 12), range(-1, 12)):
        centre = (cx + 0.5, cy + 0.5)
        inside_ref = all((c > r) if d == "max" else (c < r) for c, r, d in zip(centre, ref, directions))
        covered = any(
            all((p >= c) if d == "max" else (p <= c) for p, c, d in zip(point, centre, directions))
            for point in pts
        )
        cells += inside_ref and covered
    assert hypervolume_2d(pts, ref, directions) == pytest.approx(cells)


def test_hypervolume_rejects_bad_shapes() -> None:
    with pytest.raises(SrSearchError, match="two finite numbers"):
        hypervolume_2d([[1, 2]], [1, 2, 3], ["min", "min"])
    with pytest.raises(SrSearchError, match=r"\(n, 2\)"):
        hypervolume_2d([[1, 2, 3]], [4, 4], ["min", "min"])
    with pytest.raises(SrSearchError, match="'best'"):
        hypervolume_2d([[1, 2]], [4, 4], ["min", "best"])


def test_default_reference_is_worse_than_every_eligible_point() -> None:
    df = pd.DataFrame(
        {
            "status": ["complete", "complete", "failed"],
            "psnr_y": [30.0, 32.0, 10.0],
            "latency_ms": [5.0, 9.0, 100.0],
        }
    )
    objectives = {"psnr_y": "max", "latency_ms": "min"}
    ref = default_reference(df, objectives)
    assert ref == pytest.approx({"psnr_y": 29.8, "latency_ms": 9.4})
    single = default_reference(df.iloc[[0]], objectives)
    assert single == pytest.approx({"psnr_y": 27.0, "latency_ms": 5.5})
    with pytest.raises(SrSearchError, match="no complete trial"):
        default_reference(df.iloc[[2]], objectives)
    # A positive 'max' quantity spanning a wide range stops at zero rather than going negative;
    # one that is already <= 0 keeps the plain margin.
    wide = pd.DataFrame({"status": ["complete"] * 2, "throughput": [50.0, 20000.0], "gain": [-0.5, 1.5]})
    ref = default_reference(wide, {"throughput": "max", "gain": "max"})
    assert ref == pytest.approx({"throughput": 0.0, "gain": -0.7})


def test_hypervolume_history_follows_trial_order() -> None:
    df = pd.DataFrame(
        {
            "trial_id": ["t10", "t2", "t1", "t3", "t9"],
            "status": ["complete", "complete", "complete", "failed", "complete"],
            "psnr_y": [31.0, 29.0, 30.0, 99.0, 28.0],
            "throughput": [100.0, 300.0, 200.0, 9999.0, 150.0],
        }
    )
    objectives = {"psnr_y": "max", "throughput": "max"}
    reference = {"psnr_y": 28.0, "throughput": 50.0}
    history = hypervolume_history(df, objectives, reference)
    assert history["trial_id"].tolist() == ["t1", "t2", "t3", "t9", "t10"]
    assert history["trial"].tolist() == [1, 2, 3, 4, 5]
    # t1: 2x150; + t2: 1x250 - overlap 1x150; t3 failed; t9 dominated (and on the reference line);
    # t10 adds the slab psnr 30..31 x throughput 50..100.
    assert history["hypervolume"].tolist() == pytest.approx([300.0, 400.0, 400.0, 400.0, 450.0])
    front = pareto_front(df, objectives)[list(objectives)].to_numpy()
    assert history["hypervolume"].iloc[-1] == pytest.approx(
        hypervolume_2d(front, [28.0, 50.0], ["max", "max"])
    )


@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_history_equals_recomputed_prefixes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    df = random_results(rng, 40, 2)
    objectives = {"o0": "max", "o1": "min"}
    history = hypervolume_history(df, objectives, order_by="trial_id")
    ref = default_reference(df, objectives)
    order = sorted(range(len(df)), key=lambda i: int(df["trial_id"].iloc[i][1:]))
    for k in range(1, len(df) + 1):
        prefix = df.iloc[order[:k]]
        eligible = prefix.loc[brute_eligible(prefix, objectives), list(objectives)].to_numpy()
        expected = hypervolume_2d(eligible, [ref["o0"], ref["o1"]], ["max", "min"])
        assert history["hypervolume"].iloc[k - 1] == pytest.approx(expected)
    assert (np.diff(history["hypervolume"]) >= -1e-9).all()


def test_hypervolume_history_needs_two_objectives_and_a_known_order_column() -> None:
    df = pd.DataFrame({"trial_id": [1], "status": ["complete"], "a": [1.0], "b": [2.0], "c": [3.0]})
    with pytest.raises(SrSearchError, match="exactly two objectives"):
        hypervolume_history(df, {"a": "max", "b": "max", "c": "max"})
    with pytest.raises(SrSearchError, match="'started_at'"):
        hypervolume_history(df, {"a": "max", "b": "max"}, order_by="started_at")


# --- knee ------------------------------------------------------------------------------------------


def test_knee_is_the_point_farthest_from_the_extremes_line() -> None:
    # Normalised minimisation coordinates (throughput, psnr), 0 = best: A(1, 0), B(0.20, 0.05),
    # C(0.10, 0.5), D(0, 1). Distances towards the ideal from the line x + y = 1: B 0.53, C 0.28.
    df = pd.DataFrame(
        {
            "trial_id": ["A", "B", "C", "D", "X"],
            "status": ["complete"] * 4 + ["failed"],
            "psnr_y": [31.0, 30.9, 30.0, 29.0, 40.0],
            "throughput": [10.0, 800.0, 900.0, 1000.0, 5000.0],
        }
    )
    objectives = {"throughput": "max", "psnr_y": "max"}
    assert knee_point(df, objectives)["trial_id"] == "B"
    front = pareto_front(df, objectives)
    assert knee_point(front, objectives)["trial_id"] == "B"
    # Mixed directions: latency (min) in place of throughput keeps B as the elbow.
    df["latency_ms"] = 1000.0 / df["throughput"]
    assert knee_point(df, {"psnr_y": "max", "latency_ms": "min"})["trial_id"] == "B"


def test_knee_of_small_or_straight_fronts_is_closest_to_ideal() -> None:
    line = pd.DataFrame(
        {"status": ["complete"] * 3, "a": [0.0, 1.0, 2.0], "b": [2.0, 1.0, 0.0], "trial_id": ["p", "q", "r"]}
    )
    # A straight front: every point is on the extremes line; q is closest to the ideal (2, 2).
    assert knee_point(line, {"a": "max", "b": "max"})["trial_id"] == "q"
    single = line.iloc[[2]]
    assert knee_point(single, {"a": "max", "b": "max"})["trial_id"] == "r"
    with pytest.raises(SrSearchError, match="no knee point"):
        knee_point(line.assign(status="failed"), {"a": "max", "b": "max"})
