"""Ablation effects: what each factor level changes relative to the base, with a 95% interval and a verdict.

Derived from the rows, never written into them (docs/architecture.md, "Decisions the code builds on").
`ablation_effects(df)` is the public entry point (`sr_search.ablation_effects`); the statistics live in `contrasts`, the
tables and figure that show them in `effects_view` and `effects_figure`.

Columns of `ablation_effects(df)` (one row per factor, level and objective; the base's own level of each factor is
a row too, `is_base`, effect 0):

    factor        the varied field; `A × B` for a factorial interaction
    level         the level's value (typed: 4.0, 2, True, 'bn', None); a (level of A, level of B) pair for an
                  interaction
    level_text    the level as displayed ('4', 'True', 'none', '1 × bn')
    is_base       True on the base's level of each factor
    kind          'level' (one factor at a time), 'main' (factorial main effect) or 'interaction'
    objective     the result column compared (psnr_y, throughput, ...); direction: 'max', 'min' or None
    base_value    the base's mean over its seeds; value: the level's mean over its seeds
    effect        the estimated change vs the base (mean of per-seed differences when paired)
    ci_low, ci_high   its 95% interval (NaN when the noise cannot be estimated)
    n_seeds       seeds behind the effect (paired seeds, or the level's seeds on the noise floor)
    base_seeds    seeds the base has
    noise_floor   the base's seed-to-seed standard deviation of the objective (NaN with one base seed)
    method        'paired t', 'noise floor', 'no noise estimate', 'no data', 'same deployed network',
                  'deployed cost', 'timing spread' or 'base'
    verdict       'better', 'worse', 'not distinguishable', 'unknown' (no interval), 'same deployed network',
                  'base' ('higher'/'lower' for a column with no known direction)
    rule          the rule behind the verdict, in words, with its numbers

`ablation_effects(df, per="trial")` is the rows themselves, the base's rows repeated in each factor's group
(`is_base`), `level` typed, plus `delta_<objective>`: the change vs the base trial with the same seed. So
`ablation_effects(df, per="trial").groupby(["factor", "level"])` just works.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..columns import DEPLOYED_COST, TIMED, TrialStatus
from ..study.model import DEFAULT_OBJECTIVES, METRICS
from .contrasts import (
    NO_DATA, NO_NOISE, NOISE_FLOOR, PAIRED, Cell, Estimate, estimate, noise_sd, seeds_needed, verdict,
)
from .levels import (
    SPECIAL, factor_names, level_of, mean_of, order_levels, product, same, seed_of, text, to_float,
)
from .store import load_results, study_factors, study_objectives

__all__ = ["COST_OBJECTIVES", "EFFECT_COLUMNS", "ablation_effects", "budget_hint", "quality_objective", "study_effects"]

EFFECT_COLUMNS = (
    "factor", "level", "level_text", "is_base", "kind", "objective", "direction", "base_value", "value", "effect",
    "ci_low", "ci_high", "n_seeds", "base_seeds", "noise_floor", "method", "verdict", "rule",
)
#: objectives that depend only on the deployed network: equal `deploy_key`, equal cost, whatever the seed
COST_OBJECTIVES = DEPLOYED_COST
Objectives = Mapping[str, str] | Sequence[str] | None


def ablation_effects(df: pd.DataFrame, objectives: Objectives = None, *,
                     factors: Mapping[str, Sequence[Any]] | None = None,
                     per: Literal["level", "trial"] = "level") -> pd.DataFrame:
    """Effects of an ablation's levels vs its base (columns: module docstring), or with `per="trial"` the rows with
    the base in every factor's group and their per-seed deltas.

    `objectives`: columns to compare ({name: 'max'|'min'} or names; default the default objectives present).
    `factors`: the study's `factors` mapping (as in its file) to order levels as the file does; without it numeric
    levels are sorted and others keep their trial order, the base's level first. Only complete trials count;
    a level whose trials all failed is listed with verdict 'unknown'. Empty when `df` holds no ablation.
    """
    if per not in ("level", "trial"):
        raise ValueError(f"per must be 'level' or 'trial', got {per!r}")
    directions = _directions(df, objectives)
    design = _Design.of(df, factors)
    if per == "trial":
        return design.per_trial(directions) if design else df.iloc[:0].copy()
    if design is None:
        return pd.DataFrame(columns=list(EFFECT_COLUMNS))
    records = [record for name, direction in directions.items() for record in design.effects(name, direction)]
    return pd.DataFrame.from_records(records, columns=list(EFFECT_COLUMNS))


def budget_hint(df: pd.DataFrame, objective: str = "psnr_y", resolve: Iterable[float] = (0.05,)) -> pd.DataFrame:
    """Seeds per variant that would resolve an effect of each size in `resolve` (objective units, e.g. 0.05 dB):
    the 95% interval's half width would be that small. The per-seed difference's spread comes from the paired
    differences when some level has two or more seeds (pooled), else from the base's spread (times sqrt 2: a
    difference of two runs).

    Columns: objective, resolve, diff_sd, source, seeds (None: more than 1000). Empty when nothing estimates the
    spread (one seed everywhere and one base seed).
    """
    columns = ["objective", "resolve", "diff_sd", "source", "seeds"]
    design = _Design.of(df, None)
    if design is None or objective not in df.columns:
        return pd.DataFrame(columns=columns)
    sd, source = design.difference_sd(objective)
    if not math.isfinite(sd):
        return pd.DataFrame(columns=columns)
    rows = [{"objective": objective, "resolve": float(r), "diff_sd": sd, "source": source,
             "seeds": seeds_needed(sd, float(r))} for r in resolve]
    return pd.DataFrame.from_records(rows, columns=columns)


def study_effects(study_dir: Any, resolve: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The effects of a study folder's ablation on its own objectives, levels in its file's order, and the budget
    hint for its quality objective (what `sr-search effects DIR` prints)."""
    df = load_results(study_dir)
    objectives = study_objectives(study_dir)
    table = ablation_effects(df, objectives, factors=study_factors(study_dir))
    return table, budget_hint(df, quality_objective(objectives), (resolve,))


def quality_objective(objectives: Iterable[str]) -> str:
    """The objective effects are drawn and budgeted on: the first that is not a cost, else PSNR-Y."""
    return next((o for o in objectives if o not in COST_OBJECTIVES), "psnr_y")


# --- the design: rows, factors, levels, cells ------------------------------------------------------------------


@dataclass
class _Design:
    """An ablation's rows read once: its factors, each factor's levels in order and the base's level of each."""

    rows: list[dict[str, Any]]  # every ablation row, any status
    factors: list[str]
    factorial: bool
    base: dict[str, Any]  # factor -> the base's level (typed)
    levels: dict[str, list[Any]] = field(default_factory=dict)  # factor -> levels in order, the base's included

    @classmethod
    def of(cls, df: pd.DataFrame, given: Mapping[str, Sequence[Any]] | None) -> _Design | None:
        if "factor" not in df.columns or "trial_id" not in df.columns:
            return None
        part = df[df["factor"].map(lambda f: isinstance(f, str))]
        if part.empty:
            return None
        rows = part.sort_values("trial_id", kind="stable").to_dict("records")
        factorial = any(r["factor"] == "factorial" for r in rows)
        names = list(given) if given else factor_names(rows, factorial)
        names = [n for n in names if n in df.columns or not factorial]
        base_rows = [r for r in rows if r["factor"] == "base"]
        base = {f: level_of(base_rows[0], f) for f in names} if base_rows else {}
        design = cls(rows, names, factorial, base)
        for f in names:
            seen = [level_of(r, f) for r in rows if design.varies(r, f)]
            design.levels[f] = order_levels(f, seen, base.get(f), base_rows != [], (given or {}).get(f))
        return design

    def is_base(self, factor: str, level: Any) -> bool:
        return bool(self.base) and same(level, self.base.get(factor))

    def varies(self, row: Mapping[str, Any], factor: str) -> bool:
        """Whether `row` measures a level of `factor` (the base's rows are measured separately)."""
        return row["factor"] == "factorial" or row["factor"] == factor

    def values(self, rows: Iterable[Mapping[str, Any]], objective: str) -> dict[int, float]:
        """Complete, finite values of `objective` by seed (a seed measured twice: its mean)."""
        by_seed: dict[int, list[float]] = {}
        for r in rows:
            value = to_float(r.get(objective))
            if r.get("status") == TrialStatus.COMPLETE and math.isfinite(value):
                by_seed.setdefault(seed_of(r), []).append(value)
        return {seed: float(np.mean(v)) for seed, v in by_seed.items()}

    def base_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["factor"] == "base"]

    def cell_rows(self, fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Rows whose factors take the levels in `fixed` (the base's rows included where they match)."""
        if not self.factorial:
            ((factor, level),) = fixed.items()
            if self.is_base(factor, level):
                return self.base_rows()
            return [r for r in self.rows if r["factor"] == factor and same(level_of(r, factor), level)]
        return [r for r in self.rows if r["factor"] in SPECIAL
                and all(same(level_of(r, f), v) for f, v in fixed.items())]

    # --- effects ------------------------------------------------------------------------------------------------

    def effects(self, objective: str, direction: str | None) -> list[dict[str, Any]]:
        if objective not in _columns(self.rows):
            return []
        base = self.values(self.base_rows(), objective)
        if not self.base:  # no base trial at all: nothing to compare with
            return [{**self._common(f, lv, "level", objective, direction, base),
                     **_estimate_columns(Estimate(math.nan, math.nan, math.nan, 0, NO_DATA), direction, base)}
                    for f in self.factors for lv in self.levels[f]]
        out = []
        for factor in self.factors:
            for level in self.levels[factor]:
                if self.is_base(factor, level):
                    out.append(self._base_record(factor, level, objective, direction, base))
                    continue
                cells = self._main_cells(factor, level)
                out.append(self._record(factor, level, "main" if self.factorial else "level", cells, objective,
                                        direction, base))
        if self.factorial:
            out += self._interactions(objective, direction, base)
        return out

    def _main_cells(self, factor: str, level: Any) -> list[tuple[float, list[dict[str, Any]]]]:
        """One factor at a time: the level's rows minus the base's. Factorial: the mean of the cells at `level`
        minus the mean of the cells at the base's level (over the other factors' levels)."""
        if not self.factorial:
            return [(1.0, self.cell_rows({factor: level})), (-1.0, self.base_rows())]
        return self._marginal({factor: level}, 1.0) + self._marginal({factor: self.base[factor]}, -1.0)

    def _marginal(self, fixed: Mapping[str, Any], sign: float) -> list[tuple[float, list[dict[str, Any]]]]:
        """The cells where `fixed` holds, each weighted `sign / their number`, so together they are a mean."""
        others = [f for f in self.factors if f not in fixed]
        cells = [self.cell_rows({**fixed, **dict(zip(others, combo, strict=True))})
                 for combo in product([self.levels[f] for f in others])]
        cells = [c for c in cells if c]
        return [(sign / len(cells), c) for c in cells]

    def _interactions(self, objective: str, direction: str | None, base: dict[int, float]) -> list[dict[str, Any]]:
        """Two-factor interactions: (a, c) - (a, base) - (base, c) + (base, base), each a mean over the other
        factors; better = the pair gains more together than its two main effects add up to."""
        out = []
        for i, f in enumerate(self.factors):
            for g in self.factors[i + 1:]:
                bf, bg = self.base[f], self.base[g]
                for a in self.levels[f]:
                    for c in self.levels[g]:
                        if same(a, bf) or same(c, bg):
                            continue
                        cells = (self._marginal({f: a, g: c}, 1.0) + self._marginal({f: a, g: bg}, -1.0)
                                 + self._marginal({f: bf, g: c}, -1.0) + self._marginal({f: bf, g: bg}, 1.0))
                        out.append(self._record(f"{f} × {g}", (a, c), "interaction", cells, objective, direction,
                                                base))
        return out

    def _record(self, factor: str, level: Any, kind: str, cells: list[tuple[float, list[dict[str, Any]]]],
                objective: str, direction: str | None, base: dict[int, float]) -> dict[str, Any]:
        variant_rows = [r for w, rows in cells if w > 0 for r in rows]
        measured = [(w, self.values(rows, objective)) for w, rows in cells]
        record = self._common(factor, level, kind, objective, direction, base)
        record["value"] = mean_of([v for w, values in measured if w > 0 for v in values.values()])
        if objective in COST_OBJECTIVES:
            return {**record, **self._cost(cells, measured, variant_rows, objective, direction)}
        est = estimate(measured, base)
        if not variant_rows:
            est = Estimate(math.nan, math.nan, math.nan, 0, NO_DATA)
        return {**record, **_estimate_columns(est, direction, base)}

    def _base_record(self, factor: str, level: Any, objective: str, direction: str | None,
                     base: dict[int, float]) -> dict[str, Any]:
        record = self._common(factor, level, "main" if self.factorial else "level", objective, direction, base)
        return {**record, "is_base": True, "value": record["base_value"], "effect": 0.0, "ci_low": math.nan,
                "ci_high": math.nan, "n_seeds": len(base), "method": "base", "verdict": "base",
                "rule": "the base: every effect of this factor is relative to it"}

    def _common(self, factor: str, level: Any, kind: str, objective: str, direction: str | None,
                base: dict[int, float]) -> dict[str, Any]:
        return {"factor": factor, "level": level, "level_text": text(level), "is_base": False, "kind": kind,
                "objective": objective, "direction": direction, "base_value": mean_of(base.values()),
                "base_seeds": len(base), "noise_floor": noise_sd(base)}

    def _cost(self, cells: list[tuple[float, list[dict[str, Any]]]], measured: list[Cell],
              variant_rows: list[dict[str, Any]], objective: str, direction: str | None) -> dict[str, Any]:
        """Cost depends on the deployed network only: the same network as the base's is no effect at all; another
        network's cost is exact (params, MACs) or as good as its timing (its median-to-p90 spread)."""
        done = [r for w, rows in cells for r in rows if r.get("status") == TrialStatus.COMPLETE]
        keys = {r.get("deploy_key") for r in done}
        n = min((len(v) for _, v in measured), default=0)
        if not variant_rows or not done or n == 0:
            return _estimate_columns(Estimate(math.nan, math.nan, math.nan, 0, NO_DATA), direction, {"": 0.0})
        if len(keys) == 1:
            return {"effect": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_seeds": n, "method": "same deployed network",
                    "verdict": "same deployed network",
                    "rule": "deploys to the base's network (same deploy_key): no cost difference by construction"}
        means = [(w, float(np.mean(list(values.values())))) for w, values in measured]
        effect = sum(w * m for w, m in means)
        spread = _timing_spread(done) if objective in TIMED else 0.0
        half = spread * sum(abs(w * m) for w, m in means)
        est = Estimate(effect, effect - half, effect + half, n, "timing spread" if objective in TIMED else "cost")
        rule = (f"another deployed network; timings count beyond their own median-to-p90 spread "
                f"({spread:.1%})" if objective in TIMED else "another deployed network; exact difference")
        return {"effect": effect, "ci_low": est.low, "ci_high": est.high, "n_seeds": n,
                "method": "timing spread" if objective in TIMED else "deployed cost",
                "verdict": verdict(est, direction), "rule": rule}

    # --- the budget hint ----------------------------------------------------------------------------------------

    def difference_sd(self, objective: str) -> tuple[float, str]:
        """The standard deviation of one seed's difference vs the base: pooled over levels with two or more
        paired seeds, else sqrt(2) times the base's seed-to-seed spread."""
        base = self.values(self.base_rows(), objective)
        squares, dof = 0.0, 0
        for factor in self.factors:
            for level in self.levels[factor]:
                if self.is_base(factor, level):
                    continue
                measured = [(w, self.values(rows, objective)) for w, rows in self._main_cells(factor, level)]
                common = set.intersection(*(set(v) for _, v in measured)) if measured else set()
                if len(common) >= 2 and not self.factorial:
                    diffs = [sum(w * v[s] for w, v in measured) for s in common]
                    squares += float(np.var(diffs, ddof=1)) * (len(diffs) - 1)
                    dof += len(diffs) - 1
        if dof:
            return math.sqrt(squares / dof), f"paired differences ({dof} degrees of freedom)"
        sd = noise_sd(base)
        return math.sqrt(2) * sd, f"the base's spread over {len(base)} seeds, times sqrt 2"

    # --- per trial ----------------------------------------------------------------------------------------------

    def per_trial(self, directions: Mapping[str, str | None]) -> pd.DataFrame:
        """The rows grouped by factor, the base's rows in every factor's group, with per-seed deltas vs the base."""
        base_rows = self.base_rows()
        out = []
        for factor in self.factors:
            order = {text(level): i for i, level in enumerate(self.levels[factor])}
            members = base_rows + [r for r in self.rows if self.varies(r, factor)]
            for r in members:
                level = level_of(r, factor)
                out.append({**r, "factor": factor, "level": level,
                            "is_base": self.is_base(factor, level),
                            "_order": order.get(text(level), len(order))})
        frame = pd.DataFrame.from_records(out)
        if frame.empty:
            return frame
        for name in directions:
            base = self.values(base_rows, name)
            frame[f"delta_{name}"] = [
                to_float(r.get(name)) - base.get(seed_of(r), math.nan) if r.get("status") == TrialStatus.COMPLETE
                else math.nan
                for r in out]
        frame["_factor"] = frame["factor"].map({f: i for i, f in enumerate(self.factors)})
        keys = ["_factor", "_order", *(["seed"] if "seed" in frame.columns else [])]
        frame = frame.sort_values(keys, kind="stable").drop(columns=["_factor", "_order"])
        frame["level"] = frame["level"].astype(object)
        return frame.reset_index(drop=True)


# --- helpers ---------------------------------------------------------------------------------------------------


def _estimate_columns(est: Estimate, direction: str | None, base: Mapping[int, float]) -> dict[str, Any]:
    return {"effect": est.effect, "ci_low": est.low, "ci_high": est.high, "n_seeds": est.n_seeds,
            "method": est.method, "verdict": verdict(est, direction), "rule": _rule(est, base)}


def _rule(est: Estimate, base: Mapping[int, float]) -> str:
    """The rule behind a verdict, in words and numbers (what the report and the CLI print)."""
    k = len(base)
    if est.method == PAIRED:
        return f"95% paired t-interval over {est.n_seeds} seeds: counts when it excludes 0"
    if est.method == NOISE_FLOOR:
        return (f"{est.n_seeds} seed(s) vs the noise floor (base s.d. {noise_sd(base):.3g} over {k} seeds): "
                f"counts when |effect| > {(est.high - est.low) / 2:.3g} (95%)")
    if est.method == NO_NOISE:
        return "no noise estimate: one seed here and one base seed (add seeds, or base_seeds: 3)"
    if est.method == NO_DATA:
        return "no complete trial of this level" if k else "the base has no complete trial"
    return est.method


def _directions(df: pd.DataFrame, objectives: Objectives) -> dict[str, str | None]:
    if objectives is None:
        return {name: d for name, d in DEFAULT_OBJECTIVES.items() if name in df.columns}
    if isinstance(objectives, Mapping):
        return {str(k): (str(v) if v in ("max", "min") else None) for k, v in objectives.items()}
    if isinstance(objectives, str):
        objectives = [objectives]
    return {name: _direction(name) for name in objectives}


def _direction(name: str) -> str | None:
    family = name if name in METRICS else name.rsplit("_", 1)[0]
    return METRICS.get(family)


def _timing_spread(rows: list[dict[str, Any]]) -> float:
    """The largest relative spread of the timings behind `rows` (p90 / median - 1); 0 when not recorded."""
    spreads = [to_float(r.get("latency_ms_p90")) / to_float(r.get("latency_ms")) - 1 for r in rows]
    spreads = [s for s in spreads if math.isfinite(s) and s >= 0]
    return max(spreads, default=0.0)


def _columns(rows: list[dict[str, Any]]) -> set[str]:
    return set(rows[0]) if rows else set()
