"""Ablation effects on synthetic results with known effects and noise: intervals cover the truth at about their
nominal rate, verdicts follow them, and one seed, missing seeds, failed trials and factorial designs are handled."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from effects_data import BASE, factorial, one_at_a_time, row
from scipy import stats

import sr_search
from sr_search.results.contrasts import seeds_needed
from sr_search.results.effects import EFFECT_COLUMNS, ablation_effects, budget_hint

STUDIES = 400


def effect(table: pd.DataFrame, factor: str, level: str, objective: str = "psnr_y") -> pd.Series:
    hit = table[(table["factor"] == factor) & (table["level_text"] == level) & (table["objective"] == objective)]
    assert len(hit) == 1, (factor, level, objective, table[["factor", "level_text", "objective"]])
    return hit.iloc[0]


def covers(r: pd.Series, truth: float) -> bool:
    return bool(r["ci_low"] <= truth <= r["ci_high"])


# --- coverage over many simulated studies ----------------------------------------------------------------------


def test_paired_intervals_cover_the_true_effect_at_the_nominal_rate() -> None:
    """Three seeds per level and a seed effect shared by all variants 3x larger than each run's own noise: the
    paired interval cancels the shared part, so it covers at ~95% (an unpaired one would cover ~100%, a normal
    quantile instead of Student's ~80%)."""
    truth = {"branches": {1: 0.0, 3: 0.05, 4: -0.2}}
    rng = np.random.default_rng(1)
    hits = {level: 0 for level in truth["branches"]}
    for _ in range(STUDIES):
        table = ablation_effects(one_at_a_time(truth, sd=0.03, seed_sd=0.1, rng=rng), ["psnr_y"])
        for level, true in truth["branches"].items():
            r = effect(table, "branches", str(level))
            assert r["method"] == "paired t" and r["n_seeds"] == 3
            hits[level] += covers(r, true)
    for level, n in hits.items():
        assert 0.90 <= n / STUDIES <= 0.99, (level, n / STUDIES)


def test_noise_floor_intervals_cover_the_true_effect_at_the_nominal_rate() -> None:
    """One seed per level, the base at four: the base's spread stands in for the noise (Student t, 3 d.f.)."""
    truth = {"residual": {"bn": 0.0, "none": 0.1}}
    rng = np.random.default_rng(2)
    hits = {level: 0 for level in truth["residual"]}
    for _ in range(STUDIES):
        df = one_at_a_time(truth, seeds=(0,), base_seeds=(0, 1, 2, 3), sd=0.03, rng=rng)
        table = ablation_effects(df, ["psnr_y"])
        for level, true in truth["residual"].items():
            r = effect(table, "residual", level)
            assert r["method"] == "noise floor" and r["n_seeds"] == 1 and r["base_seeds"] == 4
            hits[level] += covers(r, true)
    for level, n in hits.items():
        assert 0.90 <= n / STUDIES <= 0.99, (level, n / STUDIES)


def test_factorial_main_effects_and_interactions_cover_at_the_nominal_rate() -> None:
    levels = {"branches": [1, 2, 4], "residual": ["clean", "none"]}
    truth = {(1, "clean"): -0.05, (4, "clean"): 0.1, (2, "none"): 0.2, (1, "none"): 0.15, (4, "none"): 0.1}
    # main effect of branches=4: mean over residual of (4, r) minus (2, r); interaction (4, none)
    main = np.mean([truth[(4, "clean")], truth[(4, "none")]]) - np.mean([0.0, truth[(2, "none")]])
    inter = truth[(4, "none")] - truth[(4, "clean")] - truth[(2, "none")] + 0.0
    rng = np.random.default_rng(3)
    hit_main = hit_inter = 0
    for _ in range(STUDIES):
        table = ablation_effects(factorial(levels, truth, sd=0.03, seed_sd=0.05, rng=rng), ["psnr_y"])
        hit_main += covers(effect(table, "branches", "4"), main)
        hit_inter += covers(effect(table, "branches × residual", "4 × none"), inter)
    assert 0.90 <= hit_main / STUDIES <= 0.99
    assert 0.90 <= hit_inter / STUDIES <= 0.99


# --- verdicts and intervals on hand-checked numbers --------------------------------------------------------------


def hand_study() -> pd.DataFrame:
    """Base 27.50/27.53/27.47; three levels: no effect, clearly worse (the RepVGG-style form), clearly better."""
    values = {("base", None): [27.50, 27.53, 27.47],
              ("branch_form", "c3_bn+c1_bn"): [26.64, 26.66, 26.62],
              ("residual", "none"): [27.52, 27.49, 27.51],
              ("branches", 4): [28.01, 28.02, 27.99]}
    rows = []
    for (factor, level), psnrs in values.items():
        over = {} if factor == "base" else {factor: level}
        for seed, psnr in enumerate(psnrs):
            rows.append(row(len(rows), factor, level, over, seed, psnr))
    return pd.DataFrame(rows)


def test_zero_effect_is_not_distinguishable_and_large_ones_are_better_or_worse() -> None:
    table = sr_search.ablation_effects(hand_study())
    assert list(table.columns) == list(EFFECT_COLUMNS)
    none = effect(table, "residual", "none")
    diffs = np.array([0.02, -0.04, 0.04])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert none["effect"] == pytest.approx(diffs.mean())
    assert (none["ci_low"], none["ci_high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert none["verdict"] == "not distinguishable" and none["method"] == "paired t"
    assert "paired t-interval over 3 seeds" in none["rule"]
    assert effect(table, "branch_form", "c3_bn+c1_bn")["verdict"] == "worse"
    assert effect(table, "branch_form", "c3_bn+c1_bn")["effect"] == pytest.approx(-0.86)
    assert effect(table, "branches", "4")["verdict"] == "better"
    # a 'min' objective flips the reading; a column with no known direction says higher/lower
    df = hand_study()
    df.loc[df["factor"] == "branches", "train_seconds"] = [40.0, 41.0, 42.0]
    slower = effect(ablation_effects(df, {"train_seconds": "min"}), "branches", "4", "train_seconds")
    assert slower["verdict"] == "worse"
    df["my_metric"] = df["psnr_y"]
    assert effect(ablation_effects(df, ["my_metric"]), "branches", "4", "my_metric")["verdict"] == "higher"


def test_base_level_is_a_row_of_every_factor_with_effect_zero() -> None:
    table = ablation_effects(hand_study(), ["psnr_y"])
    base = table[table["is_base"]]
    assert list(base["factor"]) == ["branch_form", "residual", "branches"]
    assert list(base["level_text"]) == ["c3_bn_c1", "clean", "2"]
    assert (base["effect"] == 0).all() and (base["verdict"] == "base").all()
    assert base["base_value"].iloc[0] == pytest.approx(27.5)


def test_same_deployed_network_is_no_cost_difference_and_another_network_is_compared() -> None:
    df = hand_study()
    more = df["factor"] == "branches"
    df.loc[more, "deploy_key"] = "d-wide"
    df.loc[more, "params_deploy"] = 20000
    df.loc[more, "throughput"] = 50.0
    table = ablation_effects(df, {"psnr_y": "max", "throughput": "max", "params_deploy": "min"})
    same = effect(table, "residual", "none", "throughput")
    assert same["verdict"] == "same deployed network" and same["effect"] == 0
    params = effect(table, "branches", "4", "params_deploy")
    assert params["effect"] == 20000 - 11840 and params["verdict"] == "worse" and params["method"] == "deployed cost"
    speed = effect(table, "branches", "4", "throughput")
    assert speed["effect"] == pytest.approx(-26.0) and speed["verdict"] == "worse"
    assert speed["method"] == "timing spread" and speed["ci_high"] < 0  # the timings' 2.3% spread is far smaller


# --- one seed, missing seeds, failed trials -------------------------------------------------------------------


def test_one_seed_with_extra_base_seeds_is_judged_against_the_noise_floor() -> None:
    rows = [row(i, "base", None, {}, s, v) for i, (s, v) in enumerate([(0, 27.50), (1, 27.53), (2, 27.47)])]
    rows += [row(3, "branch_form", "c3_bn+c1_bn", {"branch_form": "c3_bn+c1_bn"}, 0, 26.64),
             row(4, "bn", False, {"bn": False, "frozen_bn": None}, 0, 27.54)]
    table = ablation_effects(pd.DataFrame(rows), ["psnr_y"])
    sd = np.std([27.50, 27.53, 27.47], ddof=1)
    half = stats.t.ppf(0.975, 2) * sd * math.sqrt(1 + 1 / 3)
    bn = effect(table, "bn", "False")
    assert bn["method"] == "noise floor" and bn["noise_floor"] == pytest.approx(sd)
    assert bn["effect"] == pytest.approx(0.04) and bn["ci_high"] - bn["effect"] == pytest.approx(half)
    assert bn["verdict"] == "not distinguishable"
    assert f"|effect| > {half:.3g}" in bn["rule"] and "over 3 seeds" in bn["rule"]
    assert effect(table, "branch_form", "c3_bn+c1_bn")["verdict"] == "worse"


def test_one_seed_and_one_base_seed_has_no_verdict_and_says_what_to_add() -> None:
    df = one_at_a_time({"branches": {1: 0.0, 4: -0.86}}, seeds=(0,))
    table = ablation_effects(df, ["psnr_y"])
    r = effect(table, "branches", "4")
    assert r["verdict"] == "unknown" and r["method"] == "no noise estimate"
    assert math.isfinite(r["effect"]) and math.isnan(r["ci_low"])
    assert "base_seeds" in r["rule"]


def test_missing_seeds_pair_only_where_both_ran() -> None:
    df = one_at_a_time({"branches": {4: -0.5}, "residual": {"none": 0.0}}, seeds=(0, 1, 2))
    df.loc[(df["factor"] == "base") & (df["seed"] == 1), ["status", "psnr_y"]] = ["failed", np.nan]
    df = df[~((df["factor"] == "residual") & (df["seed"] == 2))]  # never ran
    table = ablation_effects(df, ["psnr_y"])
    four, none = effect(table, "branches", "4"), effect(table, "residual", "none")
    assert four["n_seeds"] == 2 and four["base_seeds"] == 2 and four["method"] == "paired t"
    base = df[(df["factor"] == "base") & (df["status"] == "complete")].set_index("seed")["psnr_y"]
    level = df[(df["factor"] == "branches")].set_index("seed")["psnr_y"]
    assert four["effect"] == pytest.approx(np.mean([level[0] - base[0], level[2] - base[2]]))
    # one paired seed only (the base lacks seed 1, the level seed 2): each side's mean, on the noise floor
    other = df[(df["factor"] == "residual")]["psnr_y"]
    assert none["method"] == "noise floor" and none["n_seeds"] == 2
    assert none["effect"] == pytest.approx(other.mean() - base.mean())


def test_failed_levels_and_a_failed_base_are_listed_without_a_verdict() -> None:
    df = one_at_a_time({"branches": {1: 0.0, 4: -0.5}})
    df.loc[df["factor"] == "branches", "status"] = np.where(df.loc[df["factor"] == "branches", "level"] == "4",
                                                            "failed", "complete")
    table = ablation_effects(df, ["psnr_y", "throughput"])
    r = effect(table, "branches", "4")
    assert r["verdict"] == "unknown" and r["n_seeds"] == 0 and "no complete trial" in r["rule"]
    assert effect(table, "branches", "4", "throughput")["verdict"] == "unknown"
    assert effect(table, "branches", "1")["verdict"] == "not distinguishable"
    df.loc[df["factor"] == "base", "status"] = "failed"
    table = ablation_effects(df, ["psnr_y"])
    assert (table.loc[~table["is_base"], "verdict"] == "unknown").all()
    assert "the base has no complete trial" in effect(table, "branches", "1")["rule"]


def test_no_ablation_gives_an_empty_table() -> None:
    df = pd.DataFrame([{**row(0, "base", None, {}, 0, 27.5), "factor": None}])
    assert ablation_effects(df).empty and list(ablation_effects(df).columns) == list(EFFECT_COLUMNS)
    assert ablation_effects(df, per="trial").empty
    with pytest.raises(ValueError, match="per"):
        ablation_effects(df, per="seed")


# --- factorial ------------------------------------------------------------------------------------------------


def test_factorial_main_effects_and_interactions_recover_the_truth() -> None:
    levels = {"branches": [1, 2, 4], "residual": ["clean", "none"]}
    truth = {(1, "clean"): -0.3, (4, "clean"): 0.2, (2, "none"): 0.1, (1, "none"): -0.2, (4, "none"): 0.9}
    table = ablation_effects(factorial(levels, truth, sd=1e-4), ["psnr_y"])
    assert set(table["kind"]) == {"main", "interaction"}
    assert effect(table, "branches", "4")["effect"] == pytest.approx((0.2 + 0.9) / 2 - 0.1 / 2, abs=1e-3)
    assert effect(table, "residual", "none")["effect"] == pytest.approx((-0.2 + 0.1 + 0.9) / 3 - (-0.3 + 0.2) / 3,
                                                                        abs=1e-3)
    inter = effect(table, "branches × residual", "4 × none")
    assert inter["effect"] == pytest.approx(0.9 - 0.2 - 0.1, abs=1e-3) and inter["verdict"] == "better"
    assert effect(table, "branches × residual", "1 × none")["effect"] == pytest.approx(-0.2 + 0.3 - 0.1, abs=1e-3)
    assert list(table.loc[table["kind"] == "main", "level_text"]) == ["1", "2", "4", "clean", "none"]
    # the level column holds a factorial's (factor, value) pairs as text: the factors come from there
    assert effect(table, "branches", "2")["is_base"]


def test_factorial_with_one_seed_uses_the_base_seeds() -> None:
    levels = {"branches": [2, 4], "residual": ["clean", "none"]}
    df = factorial(levels, {(4, "clean"): 0.5, (4, "none"): 0.5}, seeds=(0,), sd=0.01)
    extra = [row(100 + s, "base", df.iloc[0]["level"], {}, s, 27.5 + 0.01 * s) for s in (1, 2)]
    table = ablation_effects(pd.concat([df, pd.DataFrame(extra)], ignore_index=True), ["psnr_y"])
    main = effect(table, "branches", "4")
    assert main["method"] == "noise floor" and main["verdict"] == "better"


# --- per trial, level order, budget hint ---------------------------------------------------------------------


def test_per_trial_rows_put_the_base_in_every_factor_group_with_deltas() -> None:
    df = hand_study()
    rows = ablation_effects(df, per="trial")
    groups = dict(list(rows.groupby("factor", sort=False)))
    assert list(groups) == ["branch_form", "residual", "branches"]
    for factor, group in groups.items():
        base = group[group["is_base"]]
        assert len(base) == 3 and (base["level"] == BASE[factor]).all()
        assert (base["delta_psnr_y"] == 0).all()
    branches = groups["branches"]
    assert list(branches["level"]) == [2, 2, 2, 4, 4, 4]
    assert isinstance(branches["level"].iloc[-1], int)
    np.testing.assert_allclose(branches.loc[~branches["is_base"], "delta_psnr_y"], [0.51, 0.49, 0.52])
    assert len(rows) == 3 * 3 + 9  # the base's three rows in each of three factors, and every level's rows
    assert rows.groupby(["factor", "level"], sort=False)["delta_psnr_y"].mean().loc[("branches", 4)] == \
        pytest.approx(np.mean([0.51, 0.49, 0.52]))


def test_levels_follow_the_study_file_order_when_given() -> None:
    df = one_at_a_time({"branches": {1: 0.0, 3: 0.0, 4: 0.0}, "residual": {"bn": 0.0, "none": 0.0}})
    plain = ablation_effects(df, ["psnr_y"])
    assert list(plain["level_text"]) == ["1", "2", "3", "4", "clean", "bn", "none"]
    ordered = ablation_effects(df, ["psnr_y"], factors={"residual": ["none", "clean", {"residual": "bn"}],
                                                        "branches": [4, 3, 2, 1]})
    assert list(ordered["factor"]) == ["residual"] * 3 + ["branches"] * 4
    assert list(ordered["level_text"]) == ["none", "clean", "bn", "4", "3", "2", "1"]


def test_budget_hint_asks_for_the_seeds_that_resolve_the_effect() -> None:
    # seeds_needed: the smallest n with t(n-1) * sd / sqrt(n) <= resolve
    for sd, resolve in [(0.03, 0.05), (0.03, 0.02), (0.1, 0.05)]:
        n = seeds_needed(sd, resolve)
        assert stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) <= resolve
        assert stats.t.ppf(0.975, n - 2) * sd / math.sqrt(n - 1) > resolve or n == 2
    assert seeds_needed(1.0, 0.001) is None
    one = one_at_a_time({"branches": {1: 0.0}}, seeds=(0,), base_seeds=(0, 1, 2, 3))
    hint = budget_hint(one, "psnr_y", (0.02, 0.05, 0.1))
    base = one.loc[one["factor"] == "base", "psnr_y"]
    assert hint["diff_sd"].iloc[0] == pytest.approx(math.sqrt(2) * base.std(ddof=1))
    assert "base's spread over 4 seeds" in hint["source"].iloc[0]
    assert list(hint["seeds"]) == sorted(hint["seeds"], reverse=True)  # smaller effects need more seeds
    paired = budget_hint(one_at_a_time({"branches": {1: 0.0, 3: 0.0}}, seeds=(0, 1, 2, 3)), "psnr_y")
    assert "paired differences (6 degrees of freedom)" in paired["source"].iloc[0]
    assert budget_hint(one_at_a_time({"branches": {1: 0.0}}, seeds=(0,)), "psnr_y").empty
