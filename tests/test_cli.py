"""The CLI only parses and calls the library: assert the call and the exit code."""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import sr_search.run.tune.launch
from sr_search.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_launch_passes_its_options_to_the_library(monkeypatch, tmp_path):
    seen = {}

    def fake_launch(study, **kwargs):
        seen.update(kwargs, study=study)
        return tmp_path

    monkeypatch.setattr(sr_search.run.tune.launch, "launch", fake_launch)
    result = runner.invoke(app, ["launch", str(ROOT / "studies/smoke.yaml"), "--dry-run", "--trials", "2",
                                 "--address", "ray://head:10001", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["study"].name == "smoke"
    assert seen["n_trials"] == 2 and seen["dry_run"] and seen["address"] == "ray://head:10001"
    assert seen["out_dir"] == tmp_path and seen["dashboard_host"] == "127.0.0.1" and not seen["resume"]


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    result = runner.invoke(app, ["launch", str(ROOT / "studies/repsr_ablation.yaml"), "--dry-run",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert "trials: 16 (0 done, 16 to run)" in result.output  # 13 variants, the base at 3 more seeds
    assert not (tmp_path / "x").exists()


def test_bad_study_exits_1_and_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nspace: {ROOT / 'searchspace/repsr.yaml'}\nn_trails: 3\n")
    result = runner.invoke(app, ["launch", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml" in result.output and "n_trails" in result.output


def test_validate_lists_every_problem_and_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nspace: missing.yaml\ntrain: {iterations: -5}\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "missing.yaml" in result.output and "iterations" in result.output


def test_validate_shipped_files_pass():
    gpu_only = "rtsr_pareto.yaml"  # NTIRE23 timing needs a CUDA GPU: checked below
    files = sorted(str(p) for p in [*(ROOT / "studies").glob("*.yaml"), *(ROOT / "searchspace").glob("*.yaml")]
                   if p.name != gpu_only or torch.cuda.is_available())
    result = runner.invoke(app, ["validate", *files])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU-only machine says")
def test_validate_dry_run_and_launch_agree_on_what_this_machine_lacks(tmp_path):
    study = tmp_path / "gpu.yaml"
    study.write_text(f"name: gpu\nspace: {ROOT / 'searchspace/repsr.yaml'}\nresources: {{gpus_per_trial: 1}}\n")
    said = []
    for args in (["validate", str(study)], ["launch", str(study), "--dry-run"], ["launch", str(study)]):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")] if args[0] == "launch" else args)
        assert result.exit_code == 1, result.output
        said.append(result.output[result.output.index("needs"):].split(" (the file")[0].strip())
    assert said[0] == said[1] == said[2] and "GPU 1 (resources.gpus_per_trial)" in said[0] and "GPU 0" in said[0]
    assert not (tmp_path / "run").exists()  # nothing started
    shipped = runner.invoke(app, ["launch", str(ROOT / "studies/rtsr_pareto.yaml"), "--dry-run"])
    assert shipped.exit_code == 1 and "CUDA protocol (timing: ntire23-x2)" in shipped.output


def test_inspect_prints_counts_and_rejects_unknown_models():
    ok = runner.invoke(app, ["inspect", "ecbsr-m4c8-x4", "repsr-m4c8-x4"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("3,624") == 2  # both deploy to the released ECBSR-M4C8 size
    bad = runner.invoke(app, ["inspect", "rlfn-x9"])
    assert bad.exit_code == 1 and "unknown preset 'rlfn-x9'" in bad.output
    spec = runner.invoke(app, ["inspect", '{"block": "eresidual", "channels": 30, "groups": 4}'])
    assert spec.exit_code == 1 and "groups" in spec.output


def test_report_of_a_missing_directory_is_bad_input(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "nope" in result.output


def test_unexpected_failures_exit_2(monkeypatch):
    import sr_search.model.presets

    monkeypatch.setattr(sr_search.model.presets, "resolve", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    result = runner.invoke(app, ["inspect", "rlfn-x4"])
    assert result.exit_code == 2 and "boom" in result.output
