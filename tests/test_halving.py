"""The Pareto-safe promotion rule on hand-built rung tables (sr_search/run/halving.py)."""

import math

from sr_search.run.halving import promotable, promotion_order
from sr_search.study.model import Pruning

MAX_MAX = ["max", "max"]  # (PSNR-Y at the rung, throughput): both larger is better


def test_the_fastest_candidate_survives_with_less_psnr_than_slower_ones():
    table = {"slow_a": (30.0, 100.0), "slow_b": (29.9, 110.0), "slow_c": (29.8, 120.0), "fast": (27.0, 1000.0)}
    assert "fast" in promotable(table, MAX_MAX, reduction_factor=2)
    # a single-objective rule on PSNR would have stopped it: it is last by PSNR
    assert sorted(table, key=lambda k: -table[k][0])[-1] == "fast"


def test_a_candidate_dominated_on_both_objectives_is_stopped():
    table = {"a": (30.0, 500.0), "b": (29.0, 900.0), "dominated": (28.0, 400.0), "c": (31.0, 100.0)}
    order = promotion_order(table, MAX_MAX)
    assert order[-1] == "dominated"
    assert "dominated" not in promotable(table, MAX_MAX, reduction_factor=2)


def test_extremes_of_the_front_come_first_then_crowding():
    table = {"best": (32.0, 10.0), "fastest": (25.0, 1000.0), "middle1": (30.0, 300.0), "middle2": (29.5, 320.0),
             "middle3": (28.0, 700.0)}
    order = promotion_order(table, MAX_MAX)
    assert set(order[:2]) == {"best", "fastest"}
    assert order.index("middle3") < order.index("middle2")  # middle2 is crowded next to middle1


def test_ties_missing_values_and_directions():
    table = {"b": (30.0, 5.0), "a": (30.0, 5.0), "nan": (math.nan, 1.0), "c": (29.0, 6.0)}
    order = promotion_order(table, ["max", "min"])  # latency-like cost: smaller is better
    assert order[:2] == ["a", "b"]  # identical points: the earlier trial first
    assert order[-1] == "nan"  # a missing value ranks last
    assert promotion_order({}, MAX_MAX) == []


def test_asynchronous_share_and_a_complete_rung_keeps_at_least_one():
    one = {"only": (30.0, 10.0)}
    assert promotable(one, MAX_MAX, reduction_factor=3) == []  # floor(1/3): wait for more candidates
    assert promotable(one, MAX_MAX, reduction_factor=3, complete=True) == ["only"]
    six = {str(i): (20.0 + i, 100.0 - i) for i in range(6)}  # all on one front
    assert len(promotable(six, MAX_MAX, reduction_factor=3)) == 2


def test_a_complete_rung_keeps_its_whole_first_front_beyond_the_quota():
    front = {f"f{i}": (25.0 + i, 1000.0 - 100 * i) for i in range(5)}  # five trade-offs nothing beats on both
    behind = {f"d{i}": (24.0 - i, 50.0) for i in range(4)}  # each beaten on both by some front member
    table = {**front, **behind}
    assert len(promotable(table, MAX_MAX, reduction_factor=3)) == 3  # while more may arrive: the quota, floor(9/3)
    assert set(promotable(table, MAX_MAX, reduction_factor=3, complete=True)) == set(front)
    assert set(promotable(table, MAX_MAX, reduction_factor=2, complete=True)) >= set(front)
    with_nan = {**table, "nan": (math.nan, 2000.0)}
    assert "nan" not in promotable(with_nan, MAX_MAX, reduction_factor=3, complete=True)


def test_rung_budgets():
    assert Pruning(min_iterations=200, reduction_factor=3).rungs(1800) == [200, 600, 1800]
    assert Pruning(min_iterations=100, reduction_factor=2).rungs(1000) == [100, 200, 400, 1000]  # no rung at 800


def test_no_pruned_candidate_is_ever_on_a_front_and_the_report_draws_them_greyed(tmp_path):
    import pandas as pd

    from sr_search.results.figures import plot_front
    from sr_search.results.pareto import pareto_front
    from sr_search.results.tables import front_text

    rows = pd.DataFrame({
        "trial_id": ["0000", "0001", "0002", "0003"], "status": ["complete", "complete", "pruned", "complete"],
        "block": ["rep", "ecb", "plain", "rlfb"], "psnr_y": [30.0, 29.0, None, 20.0],
        "throughput": [100.0, 300.0, 1000.0, 2000.0], "bicubic_psnr_y": [28.0] * 4,
        # a pruned candidate keeps its rung quality in rung_* columns only: a high one must not sneak onto a front
        "rung_psnr_y": [None, None, 35.0, None], "rung_iterations": [None, None, 60, None],
        "collapsed": [False, False, None, True], "below_bicubic": [False, False, None, True],
        "timing_exclusive": [True] * 4,
    })
    objectives = {"psnr_y": "max", "throughput": "max"}
    assert "0002" not in set(pareto_front(rows, objectives)["trial_id"])
    assert "0002" not in front_text(rows, objectives)
    fig = plot_front(rows)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "stopped early (PSNR-Y at its rung)" in labels and "collapsed training" in labels


def test_named_baselines_train_to_the_full_budget_and_still_rank_the_others(tmp_path):
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from sr_search.results.study_dir import StudyDir
    from sr_search.run.tune.halving import ParetoHalving, RungLedger

    scheduler = ParetoHalving(RungLedger(StudyDir(tmp_path)), MAX_MAX, reduction_factor=3, concurrency=2, expected=4)

    def report(trial_id: str, psnr: float, throughput: float, baseline: str | None = None) -> str:
        trial = SimpleNamespace(trial_id=f"tune_{trial_id}", config={"trial_id": trial_id, "baseline": baseline})
        return scheduler.on_trial_result(None, trial, {"rung": 60, "rung_point": [psnr, throughput]})

    assert report("0000", 25.0, 10.0, baseline="rtsrn-x2") == TrialScheduler.CONTINUE  # dominated, yet a reference
    assert report("0001", 30.0, 100.0) == TrialScheduler.PAUSE  # floor(2/3) = 0: waits for more arrivals
    assert report("0002", 31.0, 200.0) == TrialScheduler.CONTINUE  # floor(3/3) = 1: the best of three
    assert set(scheduler.ledger.table(60)) == {"0000", "0001", "0002"}  # the baseline counted in the ranking


def test_a_rung_is_ranked_once_per_change_not_once_per_paused_trial(tmp_path, monkeypatch):
    """choose_trial_to_run asks the rule for every paused trial on every call: it ranks the rung once per recorded
    point (0.2 ranked it per paused trial per free slot, ~n^3 at scale) and decides exactly as the rule does."""
    from types import SimpleNamespace

    from ray.tune.experiment import Trial

    from sr_search.results.study_dir import StudyDir
    from sr_search.run.tune import halving as tune_halving

    calls = []
    real = tune_halving.promotable

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_halving, "promotable", counted)
    ledger = tune_halving.RungLedger(StudyDir(tmp_path))
    scheduler = tune_halving.ParetoHalving(ledger, MAX_MAX, reduction_factor=3, concurrency=4, expected=10_000)
    trials = []
    for k in range(60):
        trial = SimpleNamespace(trial_id=f"tune_{k}", config={"trial_id": f"{k:04d}"}, status=Trial.RUNNING)
        point = [20.0 + (k * 37 % 60) / 10, 100.0 + (k * 53 % 60)]
        decision = scheduler.on_trial_result(None, trial, {"rung": 60, "rung_point": point})
        trial.status = Trial.PAUSED if decision == "PAUSE" else Trial.TERMINATED
        trials.append(trial)
    controller = SimpleNamespace(get_trials=lambda: trials)
    paused = {t.config["trial_id"] for t in trials if t.status == Trial.PAUSED}
    allowed = set(real(ledger.table(60), MAX_MAX, 3))
    before, chosen = len(calls), set()
    for _ in range(50):  # free slots, nothing new recorded: no new ranking
        trial = scheduler.choose_trial_to_run(controller)
        if trial is not None:
            trial.status = Trial.TERMINATED
            chosen.add(trial.config["trial_id"])
    assert len(calls) - before <= 1
    assert chosen == paused & allowed and chosen  # exactly what the rule promotes among the waiting ones
