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
