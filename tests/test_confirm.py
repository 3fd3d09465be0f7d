"""Confirmation studies (`sr-search confirm`): a finished study's front trained again with a longer budget, as a
study of its own, through the real runner. Budgets are tiny (12 vs 24-60 iterations): these test the orchestration
and the bookkeeping, not the science (bench/proxy_fidelity.py measures that)."""

import hashlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray

from sr_search import SrSearchError, compare_studies, load_results, load_study
from sr_search.results.fidelity import study_fidelity
from sr_search.results.report import write_report
from sr_search.results.store import read_trial_row, write_trial_row
from sr_search.results.study_dir import StudyDir
from sr_search.run.confirm import confirm, pick_candidates, plan_confirmation
from sr_search.run.plan import make_plan, plan_session
from sr_search.run.tune.launch import launch
from sr_search.study.confirm import confirmation_study

SPACE = """\
params:
  block: [plain, rep]
  scale: 2
  colors: 3
  channels: [4, 8]
  depth: [1, 2]
"""
STUDY = """\
name: src
space: space.yaml
n_trials: 5
sampler: random
baselines: [rtsrn-x2]
timing: {device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}
train: {iterations: 12, batch_size: 4, lr_patch: 16, val_every: 6}
data: {val_max_size: 48}
"""


def _write_source(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(SPACE)
    (folder / "src.yaml").write_text(STUDY)
    return folder / "src.yaml"


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory, ray_cluster) -> Path:
    """A finished tiny search: 4 sampled candidates and one named baseline, 12 iterations each."""
    folder = tmp_path_factory.mktemp("source")
    return launch(load_study(_write_source(folder)), out_dir=folder / "run", echo=lambda _: None)


@pytest.mark.ray
def test_a_confirmation_runs_reuses_the_source_timings_and_never_writes_the_source(source, tmp_path):
    before = _hashes(source)
    src_rows = load_results(source)
    messages: list[str] = []
    out = confirm(source, 24, top=2, include_baselines=True, seeds=2, out_dir=tmp_path / "conf", echo=messages.append)

    study = load_study(out / "study.yaml")  # an ordinary study file: confirms, candidates, the new budget
    assert study.confirms == source.resolve() and study.train.iterations == 24
    assert study.data == load_study(source / "study.yaml").data and study.pruning is None
    df = load_results(out)
    assert len(df) == study.n_trials == 2 * len(study.candidates)
    assert (df["status"] == "complete").all(), df[["status", "error"]]
    assert (df["train_iterations"] == 24).all()
    assert not df.duplicated(["source_trial_id", "seed"]).any()
    assert "rtsrn-x2" in set(df["baseline"].dropna())
    # timings: the source's, never measured again
    assert df["timing_cached"].all()
    source_latency = src_rows.drop_duplicates("deploy_key").set_index("deploy_key")["latency_ms"]
    assert (df["latency_ms"].to_numpy() == source_latency.loc[df["deploy_key"]].to_numpy()).all()
    assert pq.read_table(out / "timing_cache.parquet").num_rows == pq.read_table(source / "timing_cache.parquet").num_rows
    assert any("timing(s) reused" in m for m in messages)

    fid = study_fidelity(out)
    assert set(fid.pairs["source_trial_id"]) == set(df["source_trial_id"])
    assert fid.proxy_iterations == 12 and fid.confirmed_iterations == 24 and len(fid.per_seed) == len(df)
    html = write_report(out).read_text()
    assert "Proxy fidelity" in html and (out / "report" / "fidelity.png").exists()
    cmp = compare_studies([source, out])  # compare knows the link, and the front rows name their source trial
    assert cmp.studies.set_index("study").loc[study.name, "confirms"] == "src" and "confirms src" in cmp.text()
    assert cmp.fronts.loc[cmp.fronts["study"] == study.name, "source_trial_id"].notna().all()

    # run again: nothing to do; with more seeds: only the new trainings run
    messages.clear()
    confirm(source, 24, top=2, include_baselines=True, seeds=2, out_dir=tmp_path / "conf", echo=messages.append)
    assert any("already finished" in m for m in messages)
    old = {p.name: p.read_bytes() for p in (out / "trials").glob("*.parquet")}
    confirm(source, 24, top=2, include_baselines=True, seeds=3, out_dir=tmp_path / "conf", echo=lambda _: None)
    grown = load_results(out)
    assert len(grown) == 3 * len(study.candidates) and not grown.duplicated(["source_trial_id", "seed"]).any()
    assert {p.name: p.read_bytes() for p in (out / "trials").glob("*.parquet") if p.name in old} == old

    assert _hashes(source) == before  # the source folder is only read


@pytest.mark.ray
def test_a_source_that_is_unfinished_running_frontless_or_a_confirmation_is_refused(source, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    (copy / "trials" / "0003.parquet").unlink()
    (copy / "results.parquet").unlink()
    with pytest.raises(SrSearchError, match="is not finished: 4 of 5 trials"):
        plan_confirmation(copy, 24)

    shutil.rmtree(copy)
    shutil.copytree(source, copy)
    for trial_id in load_results(copy)["trial_id"]:
        row = read_trial_row(copy, trial_id)
        write_trial_row(copy, {**row, "status": "failed", "error": "made up", "psnr_y": None})
    with pytest.raises(SrSearchError, match="has no front"):
        plan_confirmation(copy, 24)

    with StudyDir(source).owned(), pytest.raises(SrSearchError, match="is running"):
        plan_confirmation(source, 24)
    with pytest.raises(SrSearchError, match="--continue needs the source's kept weights"):
        plan_confirmation(source, 24, warm=True)
    with pytest.raises(SrSearchError, match="inside"):
        confirm(source, 24, out_dir=source / "conf", echo=lambda _: None)
    with pytest.raises(SrSearchError, match="no study"):
        plan_confirmation(tmp_path, 24)
    _, conf = plan_confirmation(source, 24, out_dir=tmp_path / "c")
    with pytest.raises(SrSearchError, match="itself a confirmation"):
        confirmation_study(conf, tmp_path / "c", list(conf.candidates), 48)


@pytest.mark.ray
def test_an_interrupted_confirmation_resumes_with_every_candidate_exactly_once(source, tmp_path):
    before = _hashes(source)
    out = tmp_path / "conf"
    cli = [sys.executable, "-m", "sr_search.cli", "confirm", str(source), "--iterations", "40", "--top", "2",
           "--seeds", "2", "--out", str(out)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "trials").glob("*.parquet")):
        time.sleep(0.5)
    assert list((out / "trials").glob("*.parquet")), "no training finished in time"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    first = load_results(out)
    if len(first) < 4:
        assert proc.returncode == 130, output

    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)  # the same command continues it
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Kendall tau" in done.stdout
    df = load_results(out)
    study = load_study(out / "study.yaml")
    expected = {(c.trial, seed) for c in study.candidates for seed in c.seeds}
    assert len(df) == len(expected) == 4
    assert set(zip(df["source_trial_id"], df["seed"])) == expected
    assert (df["status"] == "complete").all() and df["trial_id"].is_unique
    assert _hashes(source) == before


def test_a_confirmation_plans_each_candidate_once_per_seed_and_resumes_only_what_is_missing(tmp_path):
    source = load_study(_write_source(tmp_path))
    candidates = [{"trial": "0003", "arch": {"block": "rep", "scale": 2, "colors": 3, "channels": 8, "depth": 1},
                   "seeds": [3, 4]},
                  {"trial": "0000", "arch": {"block": "plain", "scale": 2, "colors": 3, "channels": 4, "depth": 2},
                   "seeds": [0, 1], "baseline": None}]
    study = confirmation_study(source, tmp_path / "run", candidates, 100)
    assert study.n_trials == 4 and study.name == "src.confirm-100" and study.out_dir == tmp_path / "src.confirm-100"
    plan = make_plan(study)
    assert [(p.source_trial, p.seed) for p in plan] == [("0003", 3), ("0003", 4), ("0000", 0), ("0000", 1)]
    row = {"trial_id": "0000", "arch_json": plan[1].spec.to_json(), "seed": 4, "baseline": None}
    session = plan_session(study, [row], asked={})
    assert [(p.source_trial, p.seed) for p in session.new] == [("0003", 3), ("0000", 0), ("0000", 1)]
    assert session.sampled == 0 and session.total == 4

    for changes, message in (({"pruning": {"min_iterations": 10}}, "full budget"),
                             ({"n_trials": 7}, "ask for 4 trainings"),
                             ({"candidates": []}, "at least one candidate")):
        data = {**study.dump(), **changes}
        with pytest.raises(SrSearchError, match=message):
            _validate(data)
    data = {k: v for k, v in study.dump().items() if k not in ("confirms", "n_trials")}
    with pytest.raises(SrSearchError, match="only a confirmation study"):
        _validate(data)
    bad = [{**candidates[0], "arch": {"block": "nope"}}]
    with pytest.raises(SrSearchError, match="not an architecture"):
        confirmation_study(source, tmp_path / "run", bad, 100)


def _validate(data):
    from sr_search.study.config import validate_study
    from sr_search.study.yamlfile import Doc, raise_problems

    doc = Doc(Path("confirm.yaml"), data)
    validate_study(doc, base_dir=None)
    raise_problems(doc.problems)


def test_candidates_are_the_front_or_the_top_k_by_rank_then_crowding_plus_baselines():
    rows = pd.DataFrame({
        "trial_id": [f"{i:04d}" for i in range(7)], "status": ["complete"] * 6 + ["failed"],
        "arch_key": ["a", "b", "c", "d", "b", "e", "f"],
        "baseline": [None, None, None, None, None, "rtsrn-x2", None],
        "psnr_y": [30.0, 29.0, 28.0, 27.0, 28.5, 20.0, 40.0],
        "throughput": [100.0, 200.0, 300.0, 150.0, 150.0, 50.0, 999.0],
    })
    objectives = {"psnr_y": "max", "throughput": "max"}
    assert list(pick_candidates(rows, objectives)["trial_id"]) == ["0000", "0002", "0001"]  # front, ends first
    top = pick_candidates(rows, objectives, top=4, include_baselines=True)
    # 0004 repeats 0001's architecture: one candidate per architecture; the failed trial is never a candidate
    assert list(top["trial_id"]) == ["0000", "0002", "0001", "0003", "0005"]


def test_continue_starts_from_the_proxy_weights_and_trains_the_rest_of_the_budget(tmp_path):
    import torch

    from sr_search.model.network import build
    from sr_search.run.trial import run_trial

    source = load_study(_write_source(tmp_path))
    arch = {"block": "plain", "scale": 2, "colors": 3, "channels": 4, "depth": 1}
    candidate = {"trial": "0002", "arch": arch, "seeds": [2], "warm_iterations": 12,
                 "warm_start": str(tmp_path / "0002.pt")}
    study = confirmation_study(source, tmp_path / "run", [candidate], 20)
    task = make_plan(study)[0].task("0000", study)
    torch.manual_seed(0)
    model = build(task.spec)
    torch.save(model.state_dict(), tmp_path / "0002.pt")
    row = run_trial(task, study, device=torch.device("cpu"), exclusive_timing=True).row
    assert row["status"] == "complete", row["error"]
    assert row["source_trial_id"] == "0002" and row["continued_from_iterations"] == 12
    assert row["train_iterations"] == 8  # 20 in all, 12 of them the proxy's
    with pytest.raises(SrSearchError, match="do not go beyond the 12"):
        confirmation_study(source, tmp_path / "run", [candidate], 12)
    (tmp_path / "0002.pt").unlink()
    assert run_trial(task, study, device=torch.device("cpu"), exclusive_timing=True).row["status"] == "failed"
