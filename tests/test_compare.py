"""`compare_studies` / `sr-search compare` on real small studies: trials run by `run_trial` (the runner's worker
function), rows and frozen study written as the runner writes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from sr_search import SrSearchError, load_results, load_study
from sr_search.cli import app
from sr_search.results.compare import compare_studies
from sr_search.results.pareto import (
    RULE_BICUBIC, RULE_GIVEN, RULE_WORST, RULE_ZERO, dominance, hypervolume_2d, pareto_front,
)
from sr_search.results.store import write_trial_row
from sr_search.results.study_dir import StudyDir
from sr_search.run.plan import make_plan
from sr_search.run.trial import run_trial
from sr_search.study.identity import resolved_yaml

SPACE = "params: {block: plain, scale: 2, colors: 3, channels: [6, 8, 12], depth: 1}\n"
TINY = "{device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}"
STUDY = """\
name: {name}
space: space.yaml
mode: ablation
base: {{block: plain, scale: 2, channels: 8, depth: 1}}
factors: {{channels: {levels}}}
timing: {timing}
protocols: {{other: {{device: cpu, precision: fp32, batch: 1, lr_size: [16, 16], warmup: 1, reps: 3, threads: 1}}}}
train: {{iterations: {iterations}, batch_size: 4, lr_patch: 16}}
data: {{val_max_size: {val}}}
{extra}"""


def make_study(root: Path, name: str, *, levels="[6, 8, 12]", timing=TINY, iterations=6, val=48, extra="") -> Path:
    """A finished study folder: each variant run by `run_trial`, its row, study.yaml and resolved.yaml written."""
    src = root / "src"
    src.mkdir(exist_ok=True)
    (src / "space.yaml").write_text(SPACE)
    (src / f"{name}.yaml").write_text(STUDY.format(name=name, levels=levels, timing=timing, iterations=iterations,
                                                   val=val, extra=extra))
    study = load_study(src / f"{name}.yaml")
    folder = StudyDir(root / name)
    for i, planned in enumerate(make_plan(study)):
        row = run_trial(planned.task(f"{i:04d}", study), study, device=torch.device("cpu"), exclusive_timing=True).row
        write_trial_row(folder, row)
    folder.study_file.write_text(study.to_yaml())
    folder.resolved.write_text(resolved_yaml(study))
    return folder.root


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    return {"short": make_study(root, "short"), "long": make_study(root, "long", iterations=12),
            "other": make_study(root, "other", timing="other")}


def test_two_studies_share_one_reference_and_say_who_dominates(studies):
    cmp = compare_studies([studies["short"], studies["long"]], strict=True)  # nothing to refuse
    assert cmp.objectives == {"psnr_y": "max", "throughput": "max"} and not cmp.flags
    # the reference is fixed by the metric (bicubic PSNR-Y, zero throughput), not by either study
    bicubic = load_results(studies["short"]).loc[0, "bicubic_psnr_y"]
    assert cmp.reference == {"psnr_y": pytest.approx(bicubic, abs=1e-6), "throughput": 0.0}
    assert cmp.reference_rule == {"psnr_y": RULE_BICUBIC, "throughput": RULE_ZERO}
    # each study's hypervolume is its front's against that one point, below-bicubic trials left out whatever the
    # reference: 6 and 12 iterations stay below bicubic, so both are 0 even when the reference is pinned lower
    pinned = compare_studies([studies["short"], studies["long"]], reference={"psnr_y": 20.0})
    for label, path in (("short", studies["short"]), ("long", studies["long"])):
        front = pareto_front(load_results(path), cmp.objectives)
        counted = front[~front["below_bicubic"].astype(bool)]
        expected = hypervolume_2d(counted[["psnr_y", "throughput"]].to_numpy(), [20.0, 0.0], ["max", "max"])
        assert pinned.studies.set_index("study").loc[label, "hypervolume"] == pytest.approx(expected)
        rows = load_results(path)
        assert pinned.studies.set_index("study").loc[label, "below_bicubic"] == rows["below_bicubic"].sum()
    assert list(cmp.studies["study"]) == ["short", "long"] and (cmp.studies["complete"] == 3).all()
    assert (cmp.studies["hypervolume"] >= 0).all() and cmp.studies["flag"].isna().all()
    # the table holds both fronts; a point's dominated_by names the other front's points that beat it
    assert set(cmp.fronts["study"]) == {"short", "long"}
    assert list(cmp.fronts.columns[-1:]) == ["dominated_by"]
    for _, point in cmp.fronts.iterrows():
        other = "long" if point["study"] == "short" else "short"
        rows = cmp.fronts[cmp.fronts["study"] == other]
        beats = rows[(rows["psnr_y"] >= point["psnr_y"]) & (rows["throughput"] >= point["throughput"])
                     & ((rows["psnr_y"] > point["psnr_y"]) | (rows["throughput"] > point["throughput"]))]
        expected = f"{other} {','.join(beats['trial_id'])}" if len(beats) else ""
        assert point["dominated_by"] == expected
    assert cmp.dominated.loc["long", "short"] == sum(cmp.fronts.query("study == 'short'")["dominated_by"] != "")
    # both are ablations of the same factor: the levels side by side
    assert list(cmp.levels.columns) == ["factor", "level", "psnr_y [short]", "psnr_y [long]", "throughput [short]",
                                        "throughput [long]"]
    assert cmp.levels[["psnr_y [short]", "psnr_y [long]"]].notna().all().all()
    assert list(cmp.levels["level"]) == ["6", "8 (base)", "12"]  # the study's level order, not text order


def test_two_folders_of_one_study_name_are_told_apart_by_folder(studies, tmp_path):
    again = shutil.copytree(studies["short"], tmp_path / "short_again")
    cmp = compare_studies([studies["short"], again])
    assert list(cmp.studies["study"]) == ["short", "short_again"] and not cmp.flags
    # the same rows: no point dominates its twin
    assert (cmp.fronts["dominated_by"] == "").all() and cmp.dominated.to_numpy().sum() == 0


def test_another_timing_protocol_is_flagged_or_refused(studies):
    cmp = compare_studies([studies["short"], studies["other"]])
    assert len(cmp.flags) == 1 and "other: timing protocol other" in cmp.flags[0] and "throughput" in cmp.flags[0]
    studies_table = cmp.studies.set_index("study")
    assert pd.isna(studies_table.loc["short", "flag"]) and studies_table.loc["other", "flag"] == "timing protocol differs"
    assert studies_table.loc["other", "flag_detail"].startswith("timing protocol other (fp32, batch 1, LR 16x16")
    assert cmp.flag_kinds == {"other": ["timing protocol"]}
    assert "FLAG other: timing protocol" in cmp.text()
    with pytest.raises(SrSearchError, match="not comparable"):
        compare_studies([studies["short"], studies["other"]], strict=True)


def test_psnr_on_other_validation_data_is_flagged(studies, tmp_path):
    smaller = make_study(tmp_path, "smallval", levels="[8]", val=32)
    cmp = compare_studies([studies["short"], smaller])
    assert cmp.flag_kinds == {"smallval": ["bicubic PSNR-Y"]}
    assert "PSNR values are not comparable" in cmp.flags[0]
    # no single bicubic PSNR-Y to anchor on: the reference falls back to the worst of both studies
    assert cmp.reference_rule["psnr_y"] == RULE_WORST


def test_different_objectives_are_refused_unless_named(studies, tmp_path):
    mine = make_study(tmp_path, "params", levels="[8]", extra="objectives: {psnr_y: max, params_deploy: min}\n")
    with pytest.raises(SrSearchError, match="optimise different objectives") as info:
        compare_studies([studies["short"], mine])
    assert "params_deploy (min)" in str(info.value) and "throughput (max)" in str(info.value)
    cmp = compare_studies([studies["short"], mine], objectives={"psnr_y": "max", "params_deploy": "min"})
    assert cmp.reference_rule["params_deploy"] == RULE_WORST
    worst = max(load_results(p)["params_deploy"].max() for p in (studies["short"], mine))
    assert cmp.reference["params_deploy"] > worst
    pinned = compare_studies([studies["short"], mine], objectives={"psnr_y": "max", "params_deploy": "min"},
                             reference={"params_deploy": 1e4})
    assert pinned.reference["params_deploy"] == 1e4 and pinned.reference_rule["params_deploy"] == RULE_GIVEN


def test_cli_writes_figure_and_tables_and_prints_the_table(studies, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["compare", str(studies["short"]), str(studies["long"]),
                                      str(studies["other"]), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    for name in ("fronts.png", "fronts.csv", "studies.csv", "levels.csv"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    assert (tmp_path / "cmp" / "fronts.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(tmp_path / "cmp" / "fronts.csv")
    assert set(table["study"]) == {"short", "long", "other"}
    assert "hypervolume reference: psnr_y" in result.output and "FLAG other" in result.output
    assert "figure: cmp/fronts.png" in result.output  # relative to the working directory
    bad = CliRunner().invoke(app, ["compare", str(studies["short"])])
    assert bad.exit_code == 1 and "two or more" in bad.output


def test_dominance_between_two_fronts_by_hand():
    objectives = {"psnr_y": "max", "latency_ms": "min"}
    a = pd.DataFrame({"psnr_y": [30.0, 28.0, float("nan")], "latency_ms": [10.0, 2.0, 1.0]})
    b = pd.DataFrame({"psnr_y": [29.0, 30.0, 28.0, 40.0], "latency_ms": [12.0, 10.0, 3.0, 1.0]})
    # a0 beats b0 (better in both), not its equal b1; a1 beats b2 (equal PSNR, faster); nothing beats b3;
    # a row with a NaN objective neither dominates nor is dominated
    assert dominance(a, b, objectives).tolist() == [[True, False, False, False], [False, False, True, False],
                                                    [False, False, False, False]]
    assert not dominance(b, a, objectives)[:, 2].any()


def test_compare_studies_is_public_api():
    import sr_search

    assert "compare_studies" in dir(sr_search) and sr_search.compare_studies is compare_studies
