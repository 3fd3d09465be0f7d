"""The runner's edges through a real local Ray instance: a CUDA out-of-memory trial (issue 11, with a block family
of the test's own loaded through `block_modules`) and the front's exclusive re-timing (`_retime_front`)."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import torch

from sr_search import SrSearchError, load_results, load_study
from sr_search.model.blocks import REGISTRY
from sr_search.model.spec import ArchSpec
from sr_search.study.config import with_overrides
from sr_search.results.store import spec_columns, write_trial_row
from sr_search.results.study_dir import StudyDir
from sr_search.run.resources import check_timing_device
from sr_search.run.timing.cache import TimingCache
from sr_search.run.tune.launch import _retime_front, launch

HERE = Path(__file__).resolve().parent
TIMING = "timing: {device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}\n"
TRAIN = "train: {iterations: 6, batch_size: 4, lr_patch: 16, val_every: 3}\ndata: {val_max_size: 48}\n"


@pytest.fixture
def registry_restored():
    """Families a test registers (through a space's block_modules) are forgotten after it."""
    before = set(REGISTRY)
    yield
    for name in set(REGISTRY) - before:
        sys.modules.pop(type(REGISTRY.pop(name)).__module__, None)


def test_an_out_of_gpu_memory_trial_fails_alone_and_the_study_completes(tmp_path, ray_cluster, registry_restored):
    """Issue 11: a study of 3 trials where the second raises OOM completes with 2 complete rows and 1 failed row
    whose error names GPU memory (the later trial runs in the same worker: concurrency 1, actors reused)."""
    (tmp_path / "space.yaml").write_text(
        f"block_modules: [{HERE / 'oom_probe_blocks.py'}]\n"
        "params: {block: oom_probe, scale: 2, colors: 3, channels: [8, 12, 16], depth: 1}\n")
    (tmp_path / "oom.yaml").write_text(
        "name: oom\nspace: space.yaml\nmode: ablation\nbase: {block: oom_probe, scale: 2, channels: 8, depth: 1}\n"
        "factors: {channels: [12, 16]}\nresources: {concurrency: 1, gpus_per_trial: 0}\n" + TIMING + TRAIN)
    out = launch(load_study(tmp_path / "oom.yaml"), out_dir=tmp_path / "run", echo=lambda _: None)

    df = load_results(out)
    assert list(df["channels"]) == [8, 12, 16]
    assert list(df["status"]) == ["complete", "failed", "complete"], df[["status", "error"]]
    error = df.loc[1, "error"]
    assert "out of GPU memory" in error and "batch 4, LR patch 16" in error and "20.00 GiB" in error, error
    # the failed candidate was costed and timed before training (cost first), but never trained to the end
    assert df.loc[1, "params_deploy"] > 0 and df.loc[1, "psnr_y"] != df.loc[1, "psnr_y"]
    complete = df[df["status"] == "complete"]
    assert complete[["psnr_y", "latency_ms", "reparam_max_abs_err"]].notna().all().all()
    assert (complete["train_iterations"] == 6).all()
    ot = optuna.load_study(study_name="oom", storage=StudyDir(out).storage_url)
    states = optuna.trial.TrialState
    assert [t.state for t in ot.trials] == [states.COMPLETE, states.FAIL, states.COMPLETE]


def test_a_cuda_protocol_without_gpu_trials_is_refused_even_where_there_is_a_gpu(tmp_path, monkeypatch):
    """Trials time where they train: with gpus_per_trial 0 every trial of a CUDA protocol would fail at timing, so the
    study is refused before its folder or Ray is touched - on a GPU machine too (the machine check passes there)."""
    import sr_search.run.tune.launch as launch_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(launch_module, "local_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    (tmp_path / "space.yaml").write_text("params: {block: plain, scale: 2, colors: 3, channels: 8, depth: 1}\n")
    (tmp_path / "gpu.yaml").write_text("name: gpu\nspace: space.yaml\nn_trials: 1\ntiming: ntire23-x2\n"
                                       "resources: {gpus_per_trial: 0}\n" + TRAIN)
    study = load_study(tmp_path / "gpu.yaml")
    for address in (None, "auto"):  # a local instance, or joining a cluster
        with pytest.raises(SrSearchError, match=r"gpus_per_trial is 0\)"):
            launch(study, out_dir=tmp_path / "run", address=address, echo=lambda _: None)
    assert not (tmp_path / "run").exists()
    check_timing_device(with_overrides(study, resources={"gpus_per_trial": 1}))  # a GPU per trial: fine
    check_timing_device(with_overrides(study, timing="cpu"))  # a CPU protocol: fine


# --- the front's re-timing ---------------------------------------------------------------------------------------


def _timed_row(trial_id: str, spec: ArchSpec, psnr: float, throughput: float, exclusive: bool, **extra) -> dict:
    return {"study": "retime", "trial_id": trial_id, "status": "complete", **spec_columns(spec), "seed": 0,
            "psnr_y": psnr, "throughput": throughput, "latency_ms": 999.0, "timing_protocol": "inline",
            "timing_exclusive": exclusive, "timing_cached": False, **extra}


def test_the_front_is_retimed_exclusively_once_per_deployed_network(tmp_path, ray_cluster):
    (tmp_path / "space.yaml").write_text("params: {block: [plain, rep], scale: 2, colors: 3, channels: [8, 16], "
                                         "depth: 1}\n")
    (tmp_path / "retime.yaml").write_text("name: retime\nspace: space.yaml\nn_trials: 6\nresources: "
                                          "{concurrency: 2, gpus_per_trial: 0}\n" + TIMING + TRAIN)
    study = load_study(tmp_path / "retime.yaml")
    plain8 = ArchSpec(block="plain", scale=2, colors=3, channels=8, depth=1)
    rep8 = ArchSpec(block="rep", scale=2, colors=3, channels=8, depth=1)  # deploys to plain8's network
    plain16 = plain8.replace(channels=16)
    assert rep8.deploy_key() == plain8.deploy_key() != plain16.deploy_key()
    folder = StudyDir(tmp_path / "run")
    folder.root.mkdir()
    rows = [
        _timed_row("0000", plain8, 30.0, 100.0, False),   # front, shared timing
        _timed_row("0001", plain16, 29.0, 200.0, False),  # front
        _timed_row("0002", rep8, 28.0, 300.0, False),     # front, same deployed network as 0000
        _timed_row("0003", plain16, 27.0, 50.0, False),   # dominated: left as it is
        _timed_row("0004", plain16, 31.0, 10.0, True, latency_ms=7.0),  # front, already exclusive: left as it is
        {"study": "retime", "trial_id": "0005", "status": "failed", **spec_columns(plain8), "seed": 0,
         "error": "boom"},
    ]
    for row in rows:
        write_trial_row(folder, row)
    messages = []

    _retime_front(study, folder, messages.append)

    df = load_results(folder).set_index("trial_id")
    assert messages == ["Re-timing 3 front member(s) exclusively..."]
    retimed = df.loc[["0000", "0001", "0002"]]
    assert retimed["timing_retimed"].eq(True).all() and retimed["timing_exclusive"].eq(True).all()
    assert retimed["timing_cached"].eq(False).all()
    assert (retimed["latency_ms"] != 999.0).all() and (retimed["latency_ms"] > 0).all()
    assert (retimed["throughput"] > 0).all() and retimed["timing_node"].notna().all()
    assert df.loc["0000", "latency_ms"] == df.loc["0002", "latency_ms"]  # one measurement per deployed network
    assert retimed["psnr_y"].tolist() == [30.0, 29.0, 28.0]  # quality untouched
    for trial_id, latency in (("0003", 999.0), ("0004", 7.0)):
        assert df.loc[trial_id, "latency_ms"] == latency and df.loc[trial_id, "timing_retimed"] is None
    assert str(df.loc["0003", "timing_exclusive"]) == "False"  # still the shared-device timing
    assert df.loc["0005", "status"] == "failed" and df.loc["0005", "timing_retimed"] is None
    cache = TimingCache(folder.timing_cache)
    assert len(cache) == 2  # plain8's and plain16's deployed networks, each measured once, exclusively
    assert all(e["exclusive"] for key in (plain8.deploy_key(), plain16.deploy_key())
               for e in cache.entries(key, study.protocol))

    _retime_front(study, folder, messages.append)  # the front is exclusive now: nothing to do
    assert len(messages) == 1
