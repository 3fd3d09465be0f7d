"""What a launch changes outside itself: nothing that outlives it. Study-folder and checkpoint writes go through the
one atomic writer (a full disk names the path and leaves no temporary file); Tune's environment variables and
Optuna's log level are set for the launch only."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sr_search.errors import StudyWriteError


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_checkpoint_is_written_whole_and_a_full_disk_names_it(tmp_path, monkeypatch):
    from sr_search.run import train

    model = nn.Linear(3, 2).double()
    path = tmp_path / "ckpt" / "0003.pt"
    train.save_checkpoint(model, path)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["weight"], model.weight.detach()) and state["weight"].dtype == torch.float64
    monkeypatch.setattr(train.torch, "save", _disk_full)
    with pytest.raises(StudyWriteError) as failed:
        train.save_checkpoint(model, path)
    assert str(path) in str(failed.value) and failed.value.errno == errno.ENOSPC
    assert sorted(p.name for p in path.parent.iterdir()) == ["0003.pt"]  # the old file, no temporary one


def test_kept_weights_are_copied_into_the_study_folder_atomically(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from sr_search.run.tune import recorder
    from sr_search.run.tune.trainable import WEIGHTS

    source = tmp_path / "tune_checkpoint"
    source.mkdir()
    (source / WEIGHTS).write_bytes(b"w" * 1000)
    target = tmp_path / "study" / "checkpoints" / "0001.pt"
    checkpoint = SimpleNamespace(filesystem=None, path=str(source))
    recorder.StudyRecorder._copy_weights(None, checkpoint, target)
    assert target.read_bytes() == b"w" * 1000
    monkeypatch.setattr(recorder, "open", _disk_full, raising=False)
    with pytest.raises(StudyWriteError, match="0001.pt"):
        recorder.StudyRecorder._copy_weights(None, checkpoint, target)
    assert [p.name for p in target.parent.iterdir()] == ["0001.pt"]


def test_tune_settings_last_as_long_as_the_session(monkeypatch):
    pytest.importorskip("ray")
    from sr_search.run.tune.launch import TUNE_ENV, scoped_env

    for name in TUNE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")  # the user's own setting wins, and stays
    with scoped_env(TUNE_ENV):
        assert os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] == "1" and os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
    assert "TUNE_DISABLE_STRICT_METRIC_CHECKING" not in os.environ and os.environ["RAY_AIR_NEW_OUTPUT"] == "1"


def test_optuna_s_log_level_is_the_caller_s_after_the_runner_talks_to_optuna(tmp_path):
    optuna = pytest.importorskip("optuna")
    from sr_search import PRESETS, load_study
    from sr_search.run.trial import TrialTask
    from sr_search.run.tune.searcher import TrialBook

    (tmp_path / "space.yaml").write_text("params: {block: plain, scale: 2, channels: [8, 16], depth: 1}\n")
    (tmp_path / "s.yaml").write_text("name: s\nspace: space.yaml\nn_trials: 2\nsampler: random\n")
    study = load_study(tmp_path / "s.yaml")
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        book = TrialBook(study, f"sqlite:///{Path(tmp_path) / 'optuna.db'}")
        trial = book.ask()
        book.annotate(trial, TrialTask("0000", PRESETS["rtsrn-x2"], seed=0))
        assert book.tell(0, {"status": "complete", "psnr_y": 30.0, "throughput": 5.0})
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
        assert book.study.trials[0].values == [30.0, 5.0]
        book.annotate(book.ask(), TrialTask("0001", PRESETS["rtsrn-x2"], seed=1))  # a driver killed before telling
        later = TrialBook(study, f"sqlite:///{Path(tmp_path) / 'optuna.db'}")  # the next session tells it by number
        assert later.tell(1, {"status": "infeasible", "constraint_max_params": 3.0})
        assert later.study.trials[1].state == optuna.trial.TrialState.PRUNED and not later.tell(1, {})
    finally:
        optuna.logging.set_verbosity(before)
