"""The O(n log n) Pareto kernel against the n x n domination-matrix implementation it replaced (0.2), on random
inputs with many ties, duplicates, infinities and NaN: same ranks, same fronts, same crowding, same hypervolume
history, same promotions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sr_search.results.pareto import (
    crowding_distance,
    front_mask,
    front_ranks,
    hypervolume_2d,
    hypervolume_history,
    nondominated_ranks,
    pareto_front,
)
from sr_search.run.halving import promotable, promotion_order


def matrix_ranks(points: np.ndarray) -> np.ndarray:
    """0.2's `nondominated_ranks`, verbatim: Deb et al.'s domination counting over an n x n matrix."""
    n = len(points)
    dominates = np.zeros((n, n), dtype=bool)
    for start in range(0, n, 512):
        block = points[start : start + 512, None, :]
        no_worse = (block <= points[None, :, :]).all(axis=2)
        better = (block < points[None, :, :]).any(axis=2)
        dominates[start : start + 512] = no_worse & better
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


def matrix_crowding(points: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """0.2's `crowding_distance`, verbatim."""
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


def tied_points(rng: np.random.Generator, n: int, k: int, levels: int, specials: bool) -> np.ndarray:
    points = rng.integers(0, levels, size=(n, k)).astype(float)
    if specials and n:
        holes = rng.random((n, k)) < 0.05
        points[holes] = rng.choice([np.nan, np.inf, -np.inf], size=holes.sum())
    return points


CASES = [(n, k, levels, seed) for n, k in [(0, 2), (1, 2), (2, 2), (50, 1), (200, 2), (700, 2), (300, 3), (200, 4),
                                          (150, 5)]
         for levels in (3, 12, 1000) for seed in range(2)]


@pytest.mark.parametrize(("n", "k", "levels", "seed"), CASES)
def test_ranks_and_front_equal_the_matrix_kernel(n: int, k: int, levels: int, seed: int) -> None:
    rng = np.random.default_rng(7919 * n + 31 * k + levels + seed)
    for specials in (False, True):
        points = tied_points(rng, n, k, levels, specials)
        expected = matrix_ranks(points)
        ranks = nondominated_ranks(points)
        assert ranks.tolist() == expected.tolist()
        assert front_mask(points).tolist() == (expected == 0).tolist()
        usable = np.isfinite(points).all(axis=1)  # what the halving rule passes
        np.testing.assert_array_equal(crowding_distance(points[usable], ranks[usable]),
                                      matrix_crowding(points[usable], expected[usable]))


def test_continuous_values_with_a_few_exact_duplicates() -> None:
    rng = np.random.default_rng(5)
    points = rng.normal(size=(1000, 2))
    points[500:600] = points[:100]  # exact duplicates of earlier rows
    points[800:820, 0] = points[820:840, 0]  # ties in one objective only
    expected = matrix_ranks(points)
    assert nondominated_ranks(points).tolist() == expected.tolist()
    assert front_mask(points).tolist() == (expected == 0).tolist()


def test_anti_correlated_points_form_one_front_and_a_chain_forms_n_fronts() -> None:
    x = np.arange(1000, dtype=float)
    assert (nondominated_ranks(np.column_stack([x, -x])) == 0).all()
    assert nondominated_ranks(np.column_stack([x, x])).tolist() == list(range(1000))
    assert nondominated_ranks(np.column_stack([x, x, x])).tolist() == list(range(1000))


@pytest.mark.parametrize("seed", range(3))
def test_front_ranks_and_pareto_front_on_a_results_table(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    df = pd.DataFrame({"a": rng.integers(0, 15, n).astype(float), "b": rng.integers(0, 15, n).astype(float),
                       "status": rng.choice(["complete", "complete", "pruned", "failed"], n),
                       "trial_id": [f"{i:04d}" for i in range(n)]}, index=rng.permutation(n) + 10)
    df.loc[df.index[rng.random(n) < 0.05], "a"] = np.nan
    objectives = {"a": "max", "b": "min"}
    eligible = (df["status"] == "complete") & np.isfinite(df["a"]) & np.isfinite(df["b"])
    points = np.column_stack([-df["a"], df["b"]])[eligible.to_numpy()]
    expected = matrix_ranks(points)
    got = front_ranks(df, objectives)
    assert got[eligible].astype(int).tolist() == expected.tolist() and got[~eligible].isna().all()
    front = pareto_front(df, objectives)
    assert sorted(front.index) == sorted(df.index[eligible.to_numpy()][expected == 0])


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_history_equals_each_prefix_recomputed_exactly(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 300
    df = pd.DataFrame({"psnr_y": rng.integers(0, 25, n) / 2.0, "latency_ms": rng.integers(1, 25, n) / 4.0,
                       "status": rng.choice(["complete", "complete", "complete", "infeasible"], n),
                       "trial_id": [f"{i:04d}" for i in rng.permutation(n)]})
    df.loc[df.index[rng.random(n) < 0.05], "psnr_y"] = np.nan
    objectives = {"psnr_y": "max", "latency_ms": "min"}
    reference = {"psnr_y": 3.0, "latency_ms": 5.0}  # some points lie outside the box
    history = hypervolume_history(df, objectives, reference)
    ordered = df.sort_values("trial_id")
    expected = []
    front = np.empty((0, 2))
    volume = 0.0
    for _, row in ordered.iterrows():  # 0.2's loop: the front of the prefix by the matrix kernel, summed again
        if row["status"] == "complete" and np.isfinite(row["psnr_y"]):
            candidate = np.vstack([front, [row["psnr_y"], row["latency_ms"]]])
            front = candidate[matrix_ranks(candidate * [-1.0, 1.0]) == 0]
            volume = hypervolume_2d(front, [3.0, 5.0], ["max", "min"])
        expected.append(volume)
    assert history["trial_id"].tolist() == ordered["trial_id"].tolist()
    assert history["hypervolume"].tolist() == expected  # bit for bit, not approximately


@pytest.mark.parametrize("seed", range(3))
def test_promotions_equal_the_matrix_kernels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = {f"{i:04d}": (float(rng.integers(20, 30)), float(rng.integers(1, 10))) for i in range(400)}
    table["0007"] = (float("nan"), 3.0)
    ids = sorted(table)
    values = np.array([table[i] for i in ids]) * [-1.0, 1.0]
    finite = np.isfinite(values).all(axis=1)
    ranks = np.full(len(ids), np.inf)
    crowd = np.zeros(len(ids))
    ranks[finite] = matrix_ranks(values[finite])
    crowd[finite] = matrix_crowding(values[finite], matrix_ranks(values[finite]))
    expected = [ids[k] for k in sorted(range(len(ids)), key=lambda k: (ranks[k], -crowd[k], ids[k]))]
    assert promotion_order(table, ["max", "min"]) == expected
    first = int((ranks == 0).sum())
    assert promotable(table, ["max", "min"], 3, complete=True) == expected[: max(1, len(ids) // 3, first)]


@pytest.mark.parametrize(("k", "levels"), [(2, 6), (2, 1000), (3, 5)])
def test_the_incremental_front_equals_the_front_of_every_prefix(k: int, levels: int) -> None:
    from sr_search.results.kernel import IncrementalFront

    rng = np.random.default_rng(k * levels)
    points = rng.integers(0, levels, size=(400, k)).astype(float)
    front = IncrementalFront(k)
    for i, p in enumerate(points):
        front.add(p)
        expected = points[: i + 1][matrix_ranks(points[: i + 1]) == 0]
        assert sorted(map(tuple, front.points)) == sorted(map(tuple, expected))
