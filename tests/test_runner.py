"""End-to-end studies through the real runner: a local Ray instance, SQLite Optuna storage, parquet rows.

Budgets are tiny (a few iterations on 24x24 timing inputs), so these test the orchestration, not the science.
"""

import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest

from sr_search import SrSearchError, load_results, load_study
from sr_search.results.export import export
from sr_search.results.report import write_report
from sr_search.run.tune.launch import launch
from study_files import TIMING, write_study

pytestmark = pytest.mark.ray

REQUIRED = ["psnr_y", "throughput", "latency_ms", "params_deploy", "macs_deploy", "reparam_max_abs_err",
            "timing_device", "deploy_key", "arch_json", "bicubic_psnr_y", "psnr_gain", "train_iterations", "seed"]



def test_search_study_writes_one_complete_row_per_trial(tmp_path, ray_cluster):
    study = load_study(write_study(tmp_path, "tiny", "n_trials: 2\nsampler: random\nkeep_checkpoints: true\n"))
    out = launch(study, out_dir=tmp_path / "run", echo=lambda _: None)

    df = load_results(out)
    assert list(df["trial_id"]) == ["0000", "0001"]
    assert (df["status"] == "complete").all(), df[["status", "error"]]
    assert df[REQUIRED].notna().all().all()
    assert (df["reparam_max_abs_err"] <= 1e-4).all()
    assert (df["train_iterations"] == 12).all()
    assert (out / "results.parquet").exists() and (out / "study.yaml").exists()

    ot = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.state for t in ot.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(t.values == [r.psnr_y, r.throughput] for t, r in zip(ot.trials, df.itertuples()))

    messages = []
    launch(study, out_dir=tmp_path / "run", echo=messages.append)  # a finished study says so, runs nothing
    assert any("already finished" in m for m in messages)
    assert len(load_results(out)) == 2

    path, err = export(out, "0000", "pt")
    assert path.exists() and err <= 1e-4
    assert (write_report(out)).exists()


def test_ablation_grid_runs_each_variant_once_per_seed(tmp_path, ray_cluster):
    body = """\
    mode: ablation
    base: {block: rep, scale: 2, channels: 8, depth: 1}
    factors: {branches: [1, 2, 3]}
    seeds: [0, 1]
    """
    study = load_study(write_study(tmp_path, "abl", body))
    df = load_results(launch(study, out_dir=tmp_path / "run", echo=lambda _: None))
    assert len(df) == 6
    assert sorted(zip(df["branches"], df["seed"])) == [(b, s) for b in (1, 2, 3) for s in (0, 1)]
    assert (df["status"] == "complete").all()
    assert df["deploy_key"].nunique() == 1  # branch count is training-time structure only


def test_base_seeds_grow_an_ablation_by_the_base_alone_and_give_a_noise_floor(tmp_path, ray_cluster):
    from sr_search import ablation_effects

    body = """\
    mode: ablation
    base: {block: rep, scale: 2, channels: 8, depth: 1}
    factors: {branches: [1, 3]}
    """
    path = write_study(tmp_path, "abl", body)
    out = launch(load_study(path), out_dir=tmp_path / "run", echo=lambda _: None)
    first = load_results(out)
    assert len(first) == 3
    path.write_text(path.read_text() + "base_seeds: 3\n")
    df = load_results(launch(load_study(path), out_dir=out, resume=True, echo=lambda _: None))
    assert len(df) == 5 and (df["status"] == "complete").all(), df[["status", "error"]]
    assert sorted(df.loc[df["factor"] == "base", "seed"]) == [0, 1, 2]
    assert df.loc[df["factor"] != "base", "seed"].tolist() == [0, 0]
    assert df.iloc[:3]["psnr_y"].tolist() == first["psnr_y"].tolist()  # finished trials kept as they were
    effects = ablation_effects(df, ["psnr_y"])
    assert set(effects.loc[~effects["is_base"], "method"]) == {"noise floor"}
    assert (effects["base_seeds"] == 3).all()


def test_infeasible_candidates_are_recorded_untrained_and_told_to_optuna(tmp_path, ray_cluster):
    study = load_study(write_study(tmp_path, "budget", "n_trials: 2\nsampler: random\nconstraints: {max_params: 100}\n"))
    out = launch(study, out_dir=tmp_path / "run", echo=lambda _: None)
    df = load_results(out)
    assert (df["status"] == "infeasible").all()
    assert df["train_iterations"].isna().all() and df["psnr_y"].isna().all()
    assert df["error"].str.contains("max_params").all()
    ot = optuna.load_study(study_name="budget", storage=f"sqlite:///{out / 'optuna.db'}")
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in ot.trials)
    assert all(t.constraints["max_params"] > 0 for t in ot.trials)


def test_a_diverging_trial_is_recorded_with_its_reason(tmp_path, ray_cluster):
    path = write_study(tmp_path, "nan", "n_trials: 1\nsampler: random\n")
    path.write_text(path.read_text().replace("val_every: 6", "val_every: 6, lr: 1.0e+12"))
    df = load_results(launch(load_study(path), out_dir=tmp_path / "run", echo=lambda _: None))
    assert df.loc[0, "status"] == "failed"
    assert "nan" in df.loc[0, "error"] or "inf" in df.loc[0, "error"]


def test_local_dashboard_binds_to_loopback_by_default(monkeypatch, tmp_path):
    import sr_search.run.tune.cluster as cluster

    calls = {}

    def fake_init(**kwargs):
        calls.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", fake_init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    study = load_study(write_study(tmp_path, "dash", "n_trials: 1\n"))
    with pytest.raises(RuntimeError, match="stop here"):
        launch(study, out_dir=tmp_path / "run", echo=lambda _: None)
    assert calls["dashboard_host"] == "127.0.0.1" and calls["address"] == "local"


def test_interrupted_study_resumes_with_every_trial_exactly_once(tmp_path):
    study_file = write_study(tmp_path, "resume", "n_trials: 3\nsampler: random\n")
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "sr_search.cli", "launch", str(study_file), "--out", str(out)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "trials").glob("*.parquet")):
        time.sleep(0.5)
    assert list((out / "trials").glob("*.parquet")), "no trial finished in time"
    proc.send_signal(signal.SIGINT)  # Ctrl-C after the first finished trial
    output, _ = proc.communicate(timeout=120)
    before = set(load_results(out)["trial_id"])
    assert len(before) >= 1  # the interrupted run kept what it finished
    if len(before) < 3:  # stopped, not finished: a non-zero exit that says how to go on (0.1 exited 0)
        assert proc.returncode == 130, output
        assert "--resume" in output, output

    done = subprocess.run(cli + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    df = load_results(out)
    assert sorted(df["trial_id"]) == ["0000", "0001", "0002"]
    assert (df["status"] == "complete").all(), df[["status", "error"]]
    ot = optuna.load_study(study_name="resume", storage=f"sqlite:///{out / 'optuna.db'}")
    assert sorted(t.number for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE) == [0, 1, 2]


def test_rows_are_told_to_optuna_and_trials_without_a_row_run_again(tmp_path):
    """A killed driver can leave Optuna trials RUNNING: the rows say what happened, and a trial without a row runs
    again under its own id."""
    from sr_search import PRESETS
    from sr_search.results.store import spec_columns, write_trial_row
    from sr_search.results.study_dir import StudyDir
    from sr_search.run.plan import plan_session
    from sr_search.run.trial import TrialTask
    from sr_search.run.tune.launch import _tell_known_rows
    from sr_search.run.tune.searcher import TrialBook

    study = load_study(write_study(tmp_path, "rec", "n_trials: 4\n"))
    folder = StudyDir(tmp_path / "run")
    folder.root.mkdir()
    book = TrialBook(study, folder.storage_url)
    for i in range(3):
        book.annotate(book.ask(), TrialTask(f"{i:04d}", PRESETS["rtsrn-x2"], seed=i))
    spec = spec_columns(PRESETS["rtsrn-x2"])
    write_trial_row(folder, {"study": "rec", "trial_id": "0000", "status": "complete", **spec, "seed": 0,
                             "psnr_y": 30.5, "throughput": 12.0})
    write_trial_row(folder, {"study": "rec", "trial_id": "0001", "status": "infeasible", **spec, "seed": 1,
                             "constraint_max_params": 5.0})

    rows = load_results(folder)
    _tell_known_rows(book, rows)
    trials = TrialBook(study, folder.storage_url).study.trials
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].values == [30.5, 12.0]
    assert trials[1].state == optuna.trial.TrialState.PRUNED and trials[1].constraints == {"max_params": 5.0}
    assert trials[2].state == optuna.trial.TrialState.RUNNING

    session = plan_session(study, rows.to_dict("records"), book.asked())
    assert [t.trial_id for t in session.rerun] == ["0002"]  # no row: runs again as itself
    assert session.sampled == 1 and session.total == 4


def test_cuda_protocol_without_gpus_is_refused_before_anything_starts(tmp_path):
    path = write_study(tmp_path, "gpu", "n_trials: 1\nresources: {gpus_per_trial: 0}\n")
    path.write_text(path.read_text().replace(TIMING, "timing: ntire23-x2\n"))
    with pytest.raises(SrSearchError, match="gpus_per_trial"):
        launch(load_study(path), out_dir=tmp_path / "run", echo=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_a_pruned_search_stops_candidates_at_rungs_and_records_them_honestly(tmp_path, ray_cluster):
    body = "n_trials: 6\nsampler: random\nresources: {concurrency: 2}\npruning: {min_iterations: 3, reduction_factor: 2}\n"
    study = load_study(write_study(tmp_path, "prune", body))
    out = launch(study, out_dir=tmp_path / "run", echo=lambda _: None)
    df = load_results(out)
    assert sorted(df["trial_id"]) == [f"{i:04d}" for i in range(6)]
    pruned, complete = df[df["status"] == "pruned"], df[df["status"] == "complete"]
    assert len(pruned) >= 1 and len(complete) >= 1, df[["trial_id", "status", "train_iterations"]]
    assert (complete["train_iterations"] == 12).all()
    assert (pruned["train_iterations"] < 12).all() and pruned["psnr_y"].isna().all()
    assert pruned["rung_psnr_y"].notna().all() and pruned["rung_iterations"].isin([3, 6]).all()
    ot = optuna.load_study(study_name="prune", storage=f"sqlite:///{out / 'optuna.db'}")
    states = {f"{t.number:04d}": t.state for t in ot.trials}
    assert all(states[i] == optuna.trial.TrialState.PRUNED for i in pruned["trial_id"])
    assert all(states[i] == optuna.trial.TrialState.COMPLETE for i in complete["trial_id"])


def test_an_interrupted_pruned_search_resumes_with_every_trial_exactly_once(tmp_path):
    body = "n_trials: 6\nsampler: random\nresources: {concurrency: 2}\npruning: {min_iterations: 3, reduction_factor: 2}\n"
    study_file = write_study(tmp_path, "presume", body)
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "sr_search.cli", "launch", str(study_file), "--out", str(out)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "rungs").glob("*.json"))) < 3:
        time.sleep(0.5)
    assert len(list((out / "rungs").glob("*.json"))) >= 3, "no rung reached in time"
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the rungs
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output  # a stopped study is not a finished one
    assert "--resume" in output

    done = subprocess.run(cli + ["--resume"], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    df = load_results(out)
    assert sorted(df["trial_id"]) == [f"{i:04d}" for i in range(6)]
    assert set(df["status"]) <= {"complete", "pruned"}, df[["trial_id", "status", "error"]]
    assert (df.loc[df["status"] == "complete", "train_iterations"] == 12).all()
    ot = optuna.load_study(study_name="presume", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(ot.trials) == 6 and all(t.state.is_finished() for t in ot.trials)


def test_a_grown_study_runs_only_the_new_trials_and_keeps_the_old_rows_bit_for_bit(tmp_path, ray_cluster):
    from sr_search.study.config import with_overrides

    study = load_study(write_study(tmp_path, "grow", "n_trials: 3\nsampler: random\n"))
    out = launch(study, out_dir=tmp_path / "run", echo=lambda _: None)
    first = load_results(out)
    files = {p.name: p.read_bytes() for p in (out / "trials").glob("*.parquet")}

    grown = launch(with_overrides(study, n_trials=5), out_dir=out, resume=True, echo=lambda _: None)
    df = load_results(grown)
    assert list(df["trial_id"]) == ["0000", "0001", "0002", "0003", "0004"]
    assert {p.name: p.read_bytes() for p in (out / "trials").glob("*.parquet") if p.name in files} == files
    pd.testing.assert_frame_equal(df.iloc[:3].reset_index(drop=True), first, check_like=True)

    with pytest.raises(SrSearchError) as info:  # what a trial means may not change: a new study instead
        launch(with_overrides(study, n_trials=6, train={"iterations": 7}), out_dir=out, resume=True,
               echo=lambda _: None)
    assert "train.iterations: 12 -> 7" in str(info.value) and "--out" in str(info.value)
    assert len(load_results(out)) == 5
