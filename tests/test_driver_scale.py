"""What keeps the driver's cost per trial flat as a study grows: the Optuna book reads its trials once, TPE reads a
bounded history, the progress state is kept as rows finish, and the recorder compacts rows as it goes."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest

from sr_search.results.pareto import pareto_front
from sr_search.results.progress import ProgressState


def sampled_study(sampler: optuna.samplers.BaseSampler, n_before: int, n_new: int) -> list[dict]:
    rng = np.random.default_rng(0)
    dists = {"x": optuna.distributions.FloatDistribution(0, 1),
             "block": optuna.distributions.CategoricalDistribution(["a", "b", "c"])}
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.add_trials([optuna.trial.create_trial(params={"x": float(rng.random()), "block": "abc"[i % 3]},
                                                distributions=dists, values=[float(rng.random()), float(rng.random())])
                      for i in range(n_before)])
    drawn = []
    for _ in range(n_new):
        trial = study.ask()
        drawn.append({"x": trial.suggest_float("x", 0, 1), "block": trial.suggest_categorical("block", list("abc"))})
        study.tell(trial, [0.5, 0.5])
    return drawn


def test_recent_tpe_samples_as_tpe_below_its_window_and_reads_only_the_window_above_it(monkeypatch):
    from sr_search.run.tune import searcher

    with searcher.quiet_optuna():
        plain = sampled_study(optuna.samplers.TPESampler(seed=3), 20, 3)
        recent = sampled_study(searcher.RecentTPESampler(seed=3, window=1000), 20, 3)
    assert recent == plain
    seen = []
    real = searcher._RecentTrials._get_trials
    monkeypatch.setattr(searcher._RecentTrials, "_get_trials",
                        lambda self, *a, **k: seen.append(len(out := real(self, *a, **k))) or out)
    drawn = sampled_study(searcher.RecentTPESampler(seed=3, window=12), 30, 2)
    assert len(drawn) == 2 and all(0 <= d["x"] <= 1 for d in drawn)
    assert seen and max(seen) == 12


def test_resume_reads_optunas_trials_once(tmp_path, monkeypatch):
    """Telling a resumed study its rows asks Optuna for its trials once (0.2: once per row, n^2 at 50,000)."""
    import sr_search.run.tune.launch as launch_module
    from sr_search import PRESETS
    from sr_search.results.study_dir import StudyDir
    from sr_search.run.trial import TrialTask
    from sr_search.run.tune.searcher import TrialBook
    from sr_search.study.config import load_study

    (tmp_path / "space.yaml").write_text("params:\n  block: plain\n  scale: 2\n  colors: 3\n  channels: 8\n"
                                         "  depth: 1\n")
    (tmp_path / "s.yaml").write_text("name: s\nspace: space.yaml\nn_trials: 6\nsampler: random\n")
    study = load_study(tmp_path / "s.yaml")
    folder = StudyDir(tmp_path / "run")
    folder.root.mkdir()
    book = TrialBook(study, folder.storage_url)
    for i in range(6):
        book.annotate(book.ask(), TrialTask(f"{i:04d}", PRESETS["rtsrn-x2"], seed=i))
    rows = pd.DataFrame({"trial_id": [f"{i:04d}" for i in range(4)], "status": ["complete"] * 4,
                         "psnr_y": np.linspace(28, 30, 4), "throughput": np.linspace(90, 10, 4)})
    calls = []
    real = optuna.Study.get_trials
    monkeypatch.setattr(optuna.Study, "get_trials", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    resumed = TrialBook(study, folder.storage_url)
    launch_module._tell_known_rows(resumed, rows)
    assert len(calls) == 1
    trials = TrialBook(study, folder.storage_url).study.trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4
    assert trials[3].values == [30.0, 10.0] and trials[5].state == optuna.trial.TrialState.RUNNING


@pytest.mark.parametrize("seed", range(3))
def test_the_progress_state_keeps_counts_best_and_front_as_the_rows_would_give_them(seed: int) -> None:
    rng = np.random.default_rng(seed)
    objectives = {"psnr_y": "max", "latency_ms": "min"}
    state = ProgressState.start(500, pd.DataFrame(), objectives, None)
    rows = []
    for i in range(300):
        status = rng.choice(["complete", "complete", "complete", "pruned", "failed", "infeasible"])
        row = {"trial_id": f"{i:04d}", "status": status, "psnr_y": float(rng.integers(20, 30)),
               "latency_ms": float(rng.integers(1, 30))}
        if rng.random() < 0.05:
            row["latency_ms"] = math.nan
        if i % 37 == 0 and rows:  # a row written again: replaces the earlier one
            row["trial_id"] = rows[int(rng.integers(len(rows)))]["trial_id"]
            rows = [r for r in rows if r["trial_id"] != row["trial_id"]]
        rows.append(row)
        state.finish(row["trial_id"], row)
        if i % 50 == 49 or i == 299:
            df = pd.DataFrame(rows)
            snap = state.snapshot()
            assert snap["finished"] == len(df)
            for s in ("complete", "pruned", "failed", "infeasible"):
                assert snap[s] == int((df["status"] == s).sum())
            complete = df[(df["status"] == "complete") & np.isfinite(df["psnr_y"])]
            assert snap["best_psnr_y"] == round(float(complete["psnr_y"].max()), 3)
            assert snap["front_size"] == len(pareto_front(complete, objectives))
            assert state.latest() is snap


def test_the_front_figure_draws_pruned_trials_as_one_cloud_without_labels() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from sr_search.results.figures import plot_front

    rng = np.random.default_rng(0)
    n = 400
    status = np.where(np.arange(n) % 3 == 0, "complete", "pruned")
    df = pd.DataFrame({"trial_id": [f"{i:04d}" for i in range(n)], "status": status, "block": "rep",
                       "psnr_y": np.where(status == "complete", rng.normal(29, 0.5, n), np.nan),
                       "rung_psnr_y": np.where(status == "pruned", rng.normal(27, 0.5, n), np.nan),
                       "rung_iterations": np.where(status == "pruned", 300, np.nan),
                       "throughput": rng.uniform(10, 500, n), "timing_exclusive": True})
    fig = plot_front(df)
    ax = fig.axes[0]
    assert len(ax.texts) == 0  # 0.2 drew one text label per pruned trial
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "stopped early (PSNR-Y at its rung)" in labels and "  266 trials: 266 at 300 it" in labels
