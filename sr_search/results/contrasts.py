"""The statistics behind ablation effects: a contrast of cells measured over seeds, its 95% interval and verdict.

An effect is a contrast: a weighted sum of cell values whose weights sum to zero (variant - base; a factorial main
effect's difference of marginal means; an interaction's double difference). Two ways to bound it:

- **paired t** (two or more seeds where every cell has a value): the contrast is computed per seed, so whatever a
  seed does to every cell alike (data order, sampling) cancels; Student t over those seeds.
- **noise floor** (fewer such seeds, the base has two or more): each cell's mean over its own seeds, and the
  base's seed-to-seed standard deviation standing in for every cell's run-to-run noise. Exact when seeds act
  independently on each cell, conservative when they act alike (what pairing would have cancelled).

Pure numpy/scipy so the report, the CLI and the tests share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

#: the confidence of every interval (95%)
CONFIDENCE = 0.95
PAIRED, NOISE_FLOOR, NO_NOISE, NO_DATA = "paired t", "noise floor", "no noise estimate", "no data"

#: one cell of a contrast: its weight and its value per seed
Cell = tuple[float, Mapping[int, float]]


@dataclass(frozen=True)
class Estimate:
    """A contrast's value and 95% interval (NaN bounds when the noise cannot be estimated), the seeds behind it
    (per cell, the fewest) and how it was bounded (`method`: one of the module's four)."""

    effect: float
    low: float
    high: float
    n_seeds: int
    method: str


def t_quantile(df: int) -> float:
    """The two-sided 95% Student t quantile with `df` degrees of freedom."""
    return _t(int(df))


@lru_cache(maxsize=256)
def _t(df: int) -> float:
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def noise_sd(base: Mapping[int, float]) -> float:
    """The base's seed-to-seed standard deviation (NaN with fewer than two seeds): the noise floor."""
    values = np.array([v for v in base.values() if math.isfinite(v)], dtype=float)
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


def estimate(cells: Sequence[Cell], base: Mapping[int, float]) -> Estimate:
    """The contrast `sum(weight * cell)` with its 95% interval: paired t when two or more seeds have every cell,
    else the noise floor from `base` (the base cell's values per seed), else no interval."""
    cells = [(w, {s: v for s, v in values.items() if math.isfinite(v)}) for w, values in cells]
    sizes = [len(values) for _, values in cells]
    if not cells or min(sizes) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, NO_DATA)
    common = sorted(set.intersection(*(set(values) for _, values in cells)))
    if len(common) >= 2:
        per_seed = np.array([sum(w * values[s] for w, values in cells) for s in common])
        mean, half = float(per_seed.mean()), t_quantile(len(common) - 1) * _sem(per_seed)
        return Estimate(mean, mean - half, mean + half, len(common), PAIRED)
    effect = float(sum(w * np.mean(list(values.values())) for w, values in cells))
    n = min(sizes)
    sd = noise_sd(base)
    if not math.isfinite(sd):
        return Estimate(effect, math.nan, math.nan, n, NO_NOISE)
    base_seeds = sum(1 for v in base.values() if math.isfinite(v))
    half = t_quantile(base_seeds - 1) * sd * math.sqrt(sum(w * w / len(values) for w, values in cells))
    return Estimate(effect, effect - half, effect + half, n, NOISE_FLOOR)


def noise_threshold(sd: float, base_seeds: int, n: int = 1) -> float:
    """What a one-at-a-time effect measured with `n` seeds must exceed to count, on the noise floor: the 95% half
    width t(k-1) * sd * sqrt(1/n + 1/k) of a variant's mean minus the base's mean over its k seeds."""
    if not math.isfinite(sd) or base_seeds < 2:
        return math.nan
    return t_quantile(base_seeds - 1) * sd * math.sqrt(1 / n + 1 / base_seeds)


def verdict(est: Estimate, direction: str | None) -> str:
    """better / worse (the interval excludes 0, on the side `direction` prefers), not distinguishable (it holds 0),
    unknown (no interval). Without a direction: higher / lower."""
    if not (math.isfinite(est.low) and math.isfinite(est.high)):
        return "unknown"
    if est.low <= 0 <= est.high:
        return "not distinguishable"
    higher = est.low > 0
    if direction not in ("max", "min"):
        return "higher" if higher else "lower"
    return "better" if higher == (direction == "max") else "worse"


def seeds_needed(diff_sd: float, resolve: float, most: int = 1000) -> int | None:
    """Seeds per variant (paired with the base at each) for a 95% interval of half width <= `resolve` when one
    seed's difference has standard deviation `diff_sd`: the smallest n with t(n-1) * diff_sd / sqrt(n) <= resolve
    (None beyond `most`)."""
    if not (math.isfinite(diff_sd) and resolve > 0):
        return None
    if diff_sd == 0:
        return 2
    for n in range(2, most + 1):
        if t_quantile(n - 1) * diff_sd / math.sqrt(n) <= resolve:
            return n
    return None


def _sem(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))
