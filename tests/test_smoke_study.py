"""studies/smoke.yaml shows a result: its three candidates, drawn as `sr-search launch` draws them, trained at the
file's budget on this CPU (without Ray: the same `run_trial` the workers call), mostly beat bicubic, none collapses,
and they make a front of two points or more. A test of the study file's budget, not of speed. On 0.2's smoke study
every trial ended under bicubic (ECB 26.53, RLFB 26.53, EResidual 19.60 dB vs 27.16)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from sr_search import load_study
from sr_search.results.pareto import pareto_front
from sr_search.run.trial import TrialTask, run_trial
from sr_search.run.tune.searcher import TrialBook

SMOKE = Path(__file__).resolve().parents[1] / "studies" / "smoke.yaml"


def drawn_tasks(study) -> list[TrialTask]:
    """The candidates a launch of `study` trains, in order: its sampler asked through the driver's Optuna book
    (an in-memory storage here), each spec sampled from the space, seeded as the searcher seeds it."""
    book = TrialBook(study, None)
    tasks = []
    for _ in range(study.n_trials):
        trial = book.ask()
        spec = study.search_space().sample(trial)
        tasks.append(TrialTask(trial_id=f"{trial.number:04d}", spec=spec, seed=study.seed + trial.number))
    return tasks


@pytest.mark.slow
def test_smoke_study_trials_mostly_beat_bicubic_and_make_a_front() -> None:
    study = load_study(SMOKE)
    assert study.mode == "search" and study.n_trials == 3 and study.sampler == "random"
    tasks = drawn_tasks(study)
    rows = pd.DataFrame([run_trial(task, study, device=torch.device("cpu"), exclusive_timing=True).row
                         for task in tasks])
    shown = rows[["trial_id", "block", "channels", "depth", "psnr_y", "bicubic_psnr_y", "start_psnr_y"]].to_string()
    assert (rows["status"] == "complete").all(), rows[["trial_id", "status", "error"]].to_string()
    beat = int((rows["psnr_y"] > rows["bicubic_psnr_y"]).sum())
    assert beat >= 2, f"only {beat} of 3 smoke trials beat bicubic:\n{shown}"
    assert not rows["collapsed"].any(), f"a smoke trial collapsed:\n{shown}"
    assert rows["below_bicubic"].sum() == 3 - beat
    front = pareto_front(rows, study.objectives)
    assert len(front) >= 2, f"the smoke front has {len(front)} point(s):\n{shown}"
