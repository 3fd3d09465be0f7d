"""The user's journey (issue 17): what optuna-dashboard shows, the live progress in a log, the public API, the plan of
an ablation, and study files a lab's group can read."""

import os
import stat
from pathlib import Path

import optuna
import pandas as pd
from typer.testing import CliRunner

import sr_search
from sr_search import PRESETS, load_study
from sr_search.cli import app
from sr_search.results.progress import ProgressState
from sr_search.results.study_dir import atomic_write
from sr_search.run.trial import TrialTask
from sr_search.run.tune.launch import LinePrinter
from sr_search.run.tune.searcher import TrialBook

ROOT = Path(__file__).resolve().parents[1]


def test_optuna_trials_carry_the_architecture_and_the_ablation_level(tmp_path):
    """optuna-dashboard shows what each trial was: every ArchSpec field, and factor/level/seed of an ablation."""
    study = load_study(ROOT / "studies/repsr_ablation.yaml")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    book = TrialBook(study, storage)
    spec = PRESETS["repsr-m4c16-x4"].model_copy(update={"branches": 3})
    book.annotate(book.ask(), TrialTask("0000", spec, seed=2, factor="branches", level=3))
    trial = optuna.load_study(study_name=study.name, storage=storage).trials[0]
    attrs = trial.user_attrs
    assert attrs["block"] == "rep" and attrs["channels"] == 16 and attrs["depth"] == 4 and attrs["branches"] == 3
    assert attrs["factor"] == "branches" and attrs["level"] == 3 and attrs["seed"] == 2


def test_progress_counts_what_runs_and_prints_plain_lines_for_a_log():
    """After a trial finishes nothing is 'running' (0.1 said 'running 1'); the lines carry no terminal escapes."""
    state = ProgressState.start(3, pd.DataFrame(), {"psnr_y": "max", "throughput": "max"}, None)
    config = {"arch": PRESETS["repsr-m4c16-x4"].to_json()}
    printed: list[str] = []
    show = LinePrinter(printed.append)

    state.start_trial("0000", config, 650)
    state.progress("0000", config, {"iteration": 260, "psnr_y": 27.1}, 650)
    show(state)
    state.finish("0000", {"trial_id": "0000", "status": "complete", "psnr_y": 27.43, "throughput": 90.0})
    show(state)

    assert printed[0].splitlines()[0].startswith("[0/3] complete 0, running 1,")
    assert printed[0].splitlines()[1].split() == ["0000", "rep", "C16", "D4", "it", "260/650", "last", "PSNR-Y",
                                                 "27.100", "dB"]
    assert printed[1].startswith("[1/3] complete 1, running 0,") and "27.430 dB" in printed[1]
    assert not any(ch in "".join(printed) for ch in "\x1b\r")


def test_the_public_api_is_listed():
    for name in ("load_results", "pareto_front", "launch", "load_study", "build", "reparameterize",
                 "ablation_effects", "compare_studies"):
        assert name in dir(sr_search) and name in sr_search.__all__, name


def test_dry_run_names_the_ablation_base_and_its_seeds(tmp_path):
    result = CliRunner().invoke(app, ["launch", str(ROOT / "studies/repsr_ablation.yaml"), "--dry-run",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert "base=None" not in result.output  # 0.1 listed the base as a level called None
    bases = [line.split() for line in result.output.splitlines() if line.split()[:1] == ["base"]]
    assert [b[1] for b in bases] == ["seed=0", "seed=1", "seed=2", "seed=3"]


def test_study_files_follow_the_umask(tmp_path):
    """A lab's shared group reads the results when its umask says so (0.1 wrote 0600 whatever the umask)."""
    old = os.umask(0o027)
    try:
        target = tmp_path / "results.parquet"
        atomic_write(target, lambda tmp: tmp.write_bytes(b"rows"))
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
    finally:
        os.umask(old)
