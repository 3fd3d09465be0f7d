"""`below_bicubic` and `collapsed` are two flags (results/quality_flags.py): an under-trained candidate is below
bicubic, not collapsed; a training that falls far below its own start, or outputs a flat image, is collapsed. Rows
carry both; the report, the front table and `compare` tell them apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sr_search import load_study
from sr_search.results.quality_flags import (
    COLLAPSE_DROP_DB, CONSTANT_SPREAD, collapse_cause, flags, is_below_bicubic, is_collapsed, row_flags,
)
from sr_search.results.figures import plot_front
from sr_search.results.report import write_report
from sr_search.run.plan import make_plan
from sr_search.run.trial import run_trial
from sr_search.study.config import with_overrides

# --- the definitions, on numbers -------------------------------------------------------------------------------


def test_below_bicubic_is_under_bicubic_and_nothing_else() -> None:
    assert is_below_bicubic(26.5, 27.16) and not is_below_bicubic(27.2, 27.16)
    assert not is_below_bicubic(27.16, 27.16)  # equal is not below
    assert not is_below_bicubic(None, 27.0) and not is_below_bicubic(float("nan"), 27.0)
    # the 0.2 smoke study's under-trained trials: below bicubic, near their start, output not flat: not collapsed
    assert row_flags(26.527, 27.160, 26.60, 0.93) == {"below_bicubic": True, "collapsed": False}


def test_collapsed_is_a_fall_from_the_start_or_a_flat_output() -> None:
    start = 25.5
    assert is_collapsed(start - COLLAPSE_DROP_DB, start, 0.9)  # fell the whole margin
    assert not is_collapsed(start - COLLAPSE_DROP_DB + 0.01, start, 0.9)
    assert is_collapsed(20.0, 12.0, CONSTANT_SPREAD / 2)  # improved on its start, but a near-constant image
    assert not is_collapsed(20.0, 12.0, CONSTANT_SPREAD)
    assert not is_collapsed(20.0, None, None)  # nothing measured: no verdict
    # collapsed whatever bicubic says: above bicubic, but far below where it started (a warm start that broke)
    assert row_flags(31.0, 30.0, 35.0, 0.9) == {"below_bicubic": False, "collapsed": True}
    assert "fell from 35.00 dB" in collapse_cause({"psnr_y": 31.0, "start_psnr_y": 35.0})
    assert "near-constant" in collapse_cause({"psnr_y": 20.0, "start_psnr_y": 12.0})


def test_rows_carry_booleans_and_old_rows_are_read_by_their_gain() -> None:
    rows = pd.DataFrame({
        "trial_id": ["new-ok", "new-below", "new-collapsed", "old-below", "old-ok", "failed"],
        "status": ["complete"] * 5 + ["failed"],
        "psnr_y": [28.0, 26.0, 10.0, 26.5, 28.0, np.nan], "bicubic_psnr_y": [27.0] * 6,
        "psnr_gain": [1.0, -1.0, -17.0, -0.5, 1.0, np.nan],
        # 0.2 wrote collapsed = below bicubic, and no below_bicubic column (None here)
        "collapsed": [False, False, True, True, False, None],
        "below_bicubic": [False, True, True, None, None, None],
    })
    marked = flags(rows).set_index(rows["trial_id"])
    assert marked.dtypes.tolist() == [bool, bool]
    assert marked.loc["new-below"].tolist() == [True, False]
    assert marked.loc["new-collapsed"].tolist() == [True, True]
    assert marked.loc["old-below"].tolist() == [True, False]  # a 0.2 row: below bicubic, never a defect
    assert marked.loc["old-ok"].tolist() == [False, False] and marked.loc["failed"].tolist() == [False, False]
    # a 0.2 results table (no below_bicubic column at all) reads the same way
    old = flags(rows.drop(columns="below_bicubic")).set_index(rows["trial_id"])
    assert not old["collapsed"].any() and old["below_bicubic"].tolist() == [False, True, True, True, False, False]


def test_report_summary_names_each_group_and_greys_the_table(tmp_path: Path) -> None:
    rows = pd.DataFrame({
        "study": "flags", "trial_id": ["0000", "0001", "0002"], "status": "complete", "block": "plain",
        "psnr_y": [31.0, 30.5, 12.0], "bicubic_psnr_y": 31.2, "psnr_gain": [-0.2, -0.7, -19.2],
        "start_psnr_y": [30.1, 30.0, 25.0], "throughput": [50.0, 80.0, 200.0], "deploy_key": ["a", "b", "c"],
        "below_bicubic": [True, True, True], "collapsed": [False, False, True], "timing_exclusive": True,
    })
    page = write_report(tmp_path, rows).read_text(encoding="utf-8")
    assert "Below bicubic: trials 0000, 0001 end under" in page and "under-trained" in page
    assert "<b>Collapsed training</b>" in page and "trial 0002 (plain): PSNR-Y fell from 25.00 dB" in page
    assert page.count('<tr class="grey">') == 3  # every front row is flagged: all greyed
    assert "no counted trial beats the reference" not in page  # the text, not the figure, says HV is 0
    assert "<b>Hypervolume 0</b>" in page
    # the collapse (12 dB) sits on the front figure's bottom edge with its value; the axis spans the rest
    ax = plot_front(rows).axes[0]
    assert 29.0 < ax.get_ylim()[0] < 30.5 and any(t.get_text() == "12.0 dB" for t in ax.texts)


# --- a real training ------------------------------------------------------------------------------------------

STUDY = """\
name: flags
space: space.yaml
mode: ablation
base: {block: plain, scale: 2, channels: 8, depth: 1}
factors: {channels: [8]}
timing: {device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}
train: {iterations: 20, batch_size: 4, lr_patch: 16}
data: {val_max_size: 48}
"""
SPACE = "params: {block: plain, scale: 2, colors: 3, channels: [8, 12], depth: 1}\n"


@pytest.fixture
def study(tmp_path: Path):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "flags.yaml").write_text(STUDY)
    return load_study(tmp_path / "flags.yaml")


def test_a_diverged_training_is_collapsed_and_a_short_one_only_below_bicubic(study) -> None:
    """The same tiny network, 20 iterations: at a sane step it is still under bicubic (under-trained, not
    collapsed); at a step 150x too large the loss stays finite but the network ends far below where it started."""
    rows = {}
    for name, train in (("short", {"lr": 0.002}), ("diverged", {"lr": 0.3, "schedule": "constant"})):
        st = with_overrides(study, train=train)
        rows[name] = run_trial(make_plan(st)[0].task("0000", st), st, device=torch.device("cpu"),
                               exclusive_timing=True).row
    short, diverged = rows["short"], rows["diverged"]
    assert short["status"] == diverged["status"] == "complete"
    assert short["start_psnr_y"] == pytest.approx(diverged["start_psnr_y"])  # same seed, same untrained network
    assert short["below_bicubic"] is True and short["collapsed"] is False
    assert short["psnr_y"] > short["start_psnr_y"]  # it learned; just not enough yet
    assert diverged["collapsed"] is True and diverged["below_bicubic"] is True
    assert diverged["psnr_y"] <= diverged["start_psnr_y"] - COLLAPSE_DROP_DB
    assert "fell from" in collapse_cause(diverged)
