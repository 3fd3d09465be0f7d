"""Hostile or careless study files and data (issue 12, cases 5-7): each is refused before anything heavy starts,
with a message that names the file, key, value and what is allowed; exit 1, never a hang or exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sr_search.cli import app
from sr_search.errors import SrSearchError
from sr_search.study.config import load_study, validate_files

runner = CliRunner()

SPACE = """\
params:
  block: [rep, plain]
  channels: [8, 16]
  depth: [1, 2]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def write(folder: Path, text: str, name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    return [str(p) for p in validate_files([path])]


# --- case 6: YAML that would eat the machine ---------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Nested anchors: each level lists the previous one `width` times (9 x 9: 387 million values expanded)."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_before_it_expands(folder):
    path = write(folder, "name: bomb\nspace: space.yaml\n" + alias_bomb())
    found = problems_of(path)
    assert any("anchors and aliases" in p and "100,000 values" in p and "study.yaml:" in p for p in found), found
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "anchors and aliases" in result.output
    with pytest.raises(SrSearchError, match="anchors and aliases"):
        load_study(path)


def test_yaml_alias_bomb_in_the_space_file_is_refused_too(folder):
    write(folder, "params:\n  block: plain\n" + alias_bomb(), name="space.yaml")
    path = write(folder, "name: t\nspace: space.yaml\n")
    assert any("space.yaml" in p and "anchors and aliases" in p for p in problems_of(path))


def test_yaml_nested_20000_deep_is_refused_without_recursion(folder):
    path = write(folder, "name: deep\nspace: " + "[" * 20_000 + "]" * 20_000 + "\n")
    found = problems_of(path)
    assert any("study.yaml:2" in p and "nested more than 50 levels" in p for p in found), found
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "nested more than 50 levels" in result.output, result.output
    deep_map = "name: deep\nspace: space.yaml\nfixed:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(60))
    assert any("nested more than 50 levels" in p for p in problems_of(write(folder, deep_map)))


def test_ordinary_anchors_and_aliases_still_work(folder):
    path = write(folder, "name: t\nspace: space.yaml\ntrain: &t {iterations: 10}\nmode: search\n"
                         "seed: 3\nn_trials: 2\n")
    assert problems_of(path) == []
    space = "params: &p\n  block: [rep, plain]\n  channels: &c [8, 16]\n  depth: [1, 2]\nconstraints: {}\n"
    write(folder, space, name="space.yaml")
    assert load_study(path).n_trials == 2


# --- case 7: values that must not be accepted -------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("n_trials: 99999999999999999999999999999\n", "study.yaml:3: n_trials: Input should be less than or equal to 100000"),
    ("n_trials: true\n", "study.yaml:3: n_trials: expected a number, got true (true/false is not a number)"),
    ("seed: 4294967296\n", "study.yaml:3: seed: Input should be less than or equal to 2147483647"),
    ("seed: false\n", "seed: expected a number, got false"),
    ("train: {lr: .inf}\n", "study.yaml:3: train.lr: Input should be a finite number"),
    ("train: {lr: .nan}\n", "train.lr: Input should be a finite number"),
    ("train: {iterations: true}\n", "train.iterations: expected a number, got true"),
    ("train: {iterations: 1000000000000}\n", "train.iterations: Input should be less than or equal to 100000000"),
    ("train: {batch_size: 10000000}\n", "train.batch_size: Input should be less than or equal to 65536"),
    ("train: {gamma: .nan}\n", "train.gamma: Input should be a finite number"),
    ("train: {milestones: [0.5, true]}\n", "train.milestones[1]: expected a number, got true"),
    ("resources: {concurrency: true}\n", "resources.concurrency: expected a number, got true"),
    ("resources: {cpus_per_trial: .inf}\n", "resources.cpus_per_trial: Input should be a finite number"),
    ("resources: {gpus_per_trial: 1000}\n", "resources.gpus_per_trial: Input should be less than or equal to 64"),
    ("data: {val_max_size: true}\n", "data.val_max_size: expected a number, got true"),
    ("constraints: {max_latency_ms: .inf}\n", "constraints.max_latency_ms: Input should be a finite number"),
    ("constraints: {max_params: true}\n", "constraints.max_params: expected a number, got true"),
    ("timing: {device: cpu, lr_size: [true, 64]}\n", "timing.lr_size[0]: expected a number, got true"),
    ("timing: {device: cpu, lr_size: [64, 10000000]}\n", "timing.lr_size[1]: Input should be less than or equal to 65536"),
    ('name: "x\\ny"\n', "name: name 'x\\ny' becomes a folder name"),
    ('name: "x\\n"\n', "name: name 'x\\n' becomes a folder name"),
    ('name: "x\\ty"\n', "becomes a folder name"),
    ('data: {val: {"set5\\n": "builtin:"}}\n', "validation set name 'set5\\n' must use only letters"),
])
def test_out_of_range_values_booleans_and_control_characters_are_refused(folder, text, expected):
    body = text if text.startswith("name:") else "name: t\n" + text
    body = body.replace("name: t\n", "name: t\nspace: space.yaml\n") if "space:" not in body else body
    if text.startswith("name:"):
        body = text + "space: space.yaml\n"
    found = problems_of(write(folder, body))
    assert any(expected in p for p in found), found
    with pytest.raises(SrSearchError):
        load_study(folder / "study.yaml")


def test_ablation_values_refuse_booleans_too(folder):
    study = ("name: t\nspace: space.yaml\nmode: ablation\nbase: {block: rep, channels: 8, depth: 1}\n"
             "factors: {depth: [2]}\nseeds: [0, true]\n")
    assert any("seeds[1]: expected a number, got true" in p for p in problems_of(write(folder, study)))
    study = ("name: t\nspace: space.yaml\nmode: ablation\nbase: {block: rep, channels: true, depth: 1}\n"
             "factors: {depth: [2]}\n")
    assert any("channels" in p and "got true" in p for p in problems_of(write(folder, study)))
    study = ("name: t\nspace: space.yaml\nmode: ablation\nbase: {block: rep, channels: 8, depth: 1, branches: true}\n"
             "factors: {depth: [2]}\n")
    assert any("branches" in p and "got true" in p for p in problems_of(write(folder, study)))


def test_cli_refuses_them_with_exit_1(folder):
    result = runner.invoke(app, ["launch", str(write(folder, "name: t\nspace: space.yaml\nn_trials: true\n")),
                                 "--dry-run"])
    assert result.exit_code == 1 and "n_trials: expected a number, got true" in result.output, result.output
    result = runner.invoke(app, ["launch", str(write(folder, 'name: "evil\\nname"\nspace: space.yaml\n')),
                                 "--dry-run", "--out", str(folder / "out")])
    assert result.exit_code == 1 and "becomes a folder name" in result.output, result.output
    assert not (folder / "out").exists()


def test_trial_ids_with_a_trailing_newline_are_refused():
    from sr_search.results.study_dir import check_trial_id

    assert check_trial_id("0007") == "0007"
    for bad in ("0007\n", "7", "../0007", "0007/..", "/abs/0007", "٠٠٠٧"):
        with pytest.raises(SrSearchError, match="not a trial id"):
            check_trial_id(bad)
