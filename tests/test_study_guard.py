"""One driver per study folder, a study that never changes meaning on resume, and a folder that holds no code: the
guards of issue 12 cases 1, 2, 8 and 12 (cases 3 and 9: test_study_integrity.py; 4: test_runner.py; 5-7:
test_hostile_input.py; 10: test_export_safety.py; 11: test_security.py)."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sr_search import SrSearchError, load_results, load_study
from sr_search.cli import app
from sr_search.results.study_dir import StudyDir, atomic_write
from sr_search.run.tune.launch import launch
from sr_search.study.identity import resolved_yaml
from study_files import write_study

runner = CliRunner()


def test_out_pointing_at_a_file_exits_1_naming_it(tmp_path):
    study = write_study(tmp_path, "outfile", "n_trials: 1\n")
    target = tmp_path / "results.txt"
    target.write_text("not a study folder")
    result = runner.invoke(app, ["launch", str(study), "--out", str(target)])
    assert result.exit_code == 1, result.output
    assert str(target.name) in result.output and "not a folder" in result.output  # the path, and what is wrong
    assert target.read_text() == "not a study folder"


def test_resume_refuses_a_space_file_edited_since_the_study_started(tmp_path):
    """The frozen study names its space by path; what it froze is the space's content, so an edited space file
    is refused on resume, naming what changed (before Ray or the folder's rows are touched)."""
    path = write_study(tmp_path, "edited", "n_trials: 2\n")
    folder = StudyDir(tmp_path / "run")
    folder.root.mkdir()
    study = load_study(path)
    atomic_write(folder.study_file, lambda tmp: tmp.write_text(study.to_yaml()))  # as launch froze it
    atomic_write(folder.resolved, lambda tmp: tmp.write_text(resolved_yaml(study)))
    space = tmp_path / "space.yaml"
    space.write_text(space.read_text() + "constraints: {max_params: 5000}\n")

    with pytest.raises(SrSearchError) as info:
        launch(load_study(path), out_dir=folder.root, resume=True, echo=lambda _: None)
    assert "space (space.yaml) constraints.max_params: (unset) -> 5000" in str(info.value)
    assert "--out" in str(info.value)
    assert not folder.optuna_db.exists()  # refused before anything was opened


class _Planted:
    """Unpickling this writes a marker file: proof that something loaded a pickle from the study folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.mark.ray
def test_resume_unpickles_nothing_in_the_study_folder(tmp_path, ray_cluster):
    """Every pickle Tune left in the folder is replaced by one that would run code; a resumed (grown) study runs
    the missing trial and never loads any of them."""
    study = load_study(write_study(tmp_path, "nopickle", "n_trials: 1\nsampler: random\n"))
    out = launch(study, out_dir=tmp_path / "run", echo=lambda _: None)
    pickles = [p for p in out.rglob("*") if p.suffix in (".pkl", ".pickle") and p.is_file()]
    assert pickles, "Tune left no pickle to plant"
    marker = tmp_path / "marker"
    for p in pickles:
        p.write_bytes(pickle.dumps(_Planted(marker)))

    launch(study, out_dir=out, resume=True, n_trials=2, echo=lambda _: None)
    assert not marker.exists()
    assert list(load_results(out)["trial_id"]) == ["0000", "0001"]


@pytest.mark.ray
def test_two_launches_one_study_one_runs_the_other_exits_1_and_a_killed_one_leaves_no_lock(tmp_path):
    study_file = write_study(tmp_path, "twice", "n_trials: 3\nsampler: random\n")
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "sr_search.cli", "launch", str(study_file), "--out", str(out)]
    first = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        while first.poll() is None and not (out / "study.yaml").exists():  # no deadline: it takes what it takes
            time.sleep(0.2)
        assert (out / "study.yaml").exists(), "the first launch never took the folder"

        # refused before it touches Ray: pointed at an address where no Ray listens, a launch that reached
        # ray.init would fail there instead (exit 2, a connection error), however fast or slow the machine is
        second = subprocess.run(cli + ["--resume"], capture_output=True, text=True, timeout=600,
                                env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"})
        said = second.stderr + second.stdout
        assert second.returncode == 1, said
        assert "in use" in said and f"pid {first.pid}" in said  # what holds it, and who

        while first.poll() is None and not list((out / "trials").glob("*.parquet")):
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray instance it started
        first.communicate(timeout=60)

    done = subprocess.run(cli + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(load_results(out)["trial_id"]) == ["0000", "0001", "0002"]
