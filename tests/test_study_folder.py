"""A study folder read by the tools that need no Ray: `sr-search status` (progress.json + rows) and the consolidated
results.parquet."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from sr_search import SrSearchError
from sr_search.results.progress import ProgressState, status, write_progress
from sr_search.results.store import consolidate, load_results, write_trial_row
from sr_search.results.study_dir import StudyDir
from study_files import trial_row


row = trial_row


@pytest.fixture
def folder(tmp_path: Path) -> StudyDir:
    """A study that was running: 4 of 6 trials have rows, one more is running, progress.json is a bit behind."""
    folder = StudyDir(tmp_path / "study")
    folder.root.mkdir()
    write_trial_row(folder, row("0000", "complete", psnr_y=30.1, throughput=10.0, params_deploy=900,
                                train_iterations=12))
    write_trial_row(folder, row("0001", "complete", psnr_y=29.5, throughput=20.0, params_deploy=100,
                                train_iterations=12))
    write_trial_row(folder, row("0002", "failed", error="out of GPU memory while training"))
    write_trial_row(folder, row("0003", "infeasible", error="max_params", params_deploy=5_000_000))
    # written when only one trial had finished: status must count the rows, not this
    state = ProgressState(total=6, objectives={"psnr_y": "max", "throughput": "max"},
                          dashboard="http://127.0.0.1:8265", rows={"0000": {"trial_id": "0000", "status": "complete",
                                                                             "psnr_y": 30.1, "throughput": 10.0}},
                          done_before=0, started=time.time() - 120)
    state.start_trial("0004", {"arch": json.dumps({"block": "rep", "channels": 16, "depth": 4})}, iterations=12)
    state.progress("0004", {}, {"iteration": 6, "psnr_y": 28.25}, iterations=12)
    write_progress(folder, state.snapshot())
    return folder


def test_status_counts_the_rows_and_shows_the_running_trials(folder):
    lines = status(folder.root).splitlines()
    assert lines[0].startswith("[4/6] complete 2, running 1, failed 1, infeasible 1 | best PSNR-Y 30.100 dB | front 2")
    assert re.search(r"elapsed 2\.0 min", lines[0]), lines[0]
    assert re.fullmatch(r"\s+0004 rep\s+C16 D4\s+it 6/12\s+last PSNR-Y 28\.250 dB", lines[1]), lines[1]
    assert re.fullmatch(r"running; last update \d+ s ago", lines[2]), lines[2]
    assert lines[3] == "Ray dashboard: http://127.0.0.1:8265"


def test_status_uses_the_objectives_the_study_was_frozen_with(folder):
    # on the default objectives (psnr_y, throughput) the front has 2 points; on (psnr_y max, train_iterations min)
    # trial 0000 dominates 0001 (same iterations, higher PSNR)
    folder.study_file.write_text(yaml.safe_dump({"name": "s", "objectives": {"psnr_y": "max",
                                                                             "train_iterations": "min"}}))
    assert "| front 1 |" in status(folder.root).splitlines()[0]


def test_status_of_a_finished_study_names_no_dashboard_and_counts_pruned_rows(folder):
    write_trial_row(folder, row("0004", "pruned", rung_psnr_y=27.0))
    write_trial_row(folder, row("0005", "complete", psnr_y=31.0, throughput=1.0))
    snapshot = json.loads(folder.progress.read_text())
    snapshot.update(state="finished", running=0, running_trials=[])
    write_progress(folder, snapshot)
    lines = status(folder.root).splitlines()
    assert lines[0].startswith("[6/6] complete 3, running 0, failed 1, infeasible 1, pruned 1 | best PSNR-Y 31.000 dB"
                               " | front 3")
    assert lines[1].startswith("finished; last update") and len(lines) == 2


def test_status_of_a_folder_that_was_never_launched_says_so(tmp_path):
    (tmp_path / "trials").mkdir()
    with pytest.raises(SrSearchError, match="no progress.json"):
        status(tmp_path)


def test_results_parquet_keeps_the_types_of_the_rows(folder):
    """An int column with a null (train_iterations of failed trials) stays int64 and an all-null bool stays bool in
    results.parquet (a round trip through pandas made them double and null); text stays large_string, as 0.1 wrote
    it, so a landed study's files and new ones have one schema."""
    schema = pq.read_schema(consolidate(folder))
    for name, typ in [("train_iterations", "int64"), ("params_deploy", "int64"), ("timing_retimed", "bool"),
                      ("psnr_y", "double"), ("trial_id", "large_string")]:
        assert str(schema.field(name).type) == typ, name
    assert list(load_results(folder)["trial_id"]) == ["0000", "0001", "0002", "0003"]
    assert pq.read_table(folder.results).column("trial_id").to_pylist() == ["0000", "0001", "0002", "0003"]
