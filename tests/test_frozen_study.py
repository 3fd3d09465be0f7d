"""One reader of a study folder (`StudyDir.frozen()`): every command reads `study.yaml` and `resolved.yaml` through
it, so a copied folder's hostile file is refused by each alike, and a 0.2 folder still loads, reports and compares.
The folder is `tests/data/study_0.2` (written by sr-search 0.2.0)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sr_search.cli import app
from sr_search.errors import SrSearchError
from sr_search.results.compare import compare_studies
from sr_search.results.study_dir import StudyDir
from study_files import alias_bomb

STUDY_02 = Path(__file__).parent / "data" / "study_0.2"
runner = CliRunner()


@pytest.fixture
def copies(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the 0.2 study folder, as a colleague's folders would arrive."""
    return (Path(shutil.copytree(STUDY_02, tmp_path / "a")), Path(shutil.copytree(STUDY_02, tmp_path / "b")))


def test_the_reader_gives_what_a_0_2_folder_froze():
    frozen = StudyDir(STUDY_02).frozen()
    assert frozen.found and frozen.name == "study_0.2" and frozen.mode == "ablation"
    assert frozen.objectives == {"psnr_y": "max", "throughput": "max"}
    assert frozen.factors == {"channels": [6, 12]} and frozen.block_modules == ()
    assert frozen.protocol["device"] == "cpu" and frozen.protocol["lr_size"] == [24, 24]


def test_a_folder_without_its_study_file_reads_as_the_defaults(tmp_path):
    frozen = StudyDir(tmp_path).frozen()
    assert not frozen.found and frozen.name == tmp_path.name and frozen.objectives == {"psnr_y": "max",
                                                                                        "throughput": "max"}


@pytest.mark.parametrize("file", ["study.yaml", "resolved.yaml"])
def test_a_study_file_that_is_not_a_mapping_is_refused_naming_it(tmp_path, file):
    shutil.copytree(STUDY_02, tmp_path / "s")
    (tmp_path / "s" / file).write_text("- just\n- a list\n")
    with pytest.raises(SrSearchError, match=rf"{file}.*mapping.*list"):
        StudyDir(tmp_path / "s").frozen()


@pytest.mark.parametrize("command", ["compare", "report", "status", "pareto", "effects"])
def test_an_alias_bomb_in_a_copied_folder_is_refused_by_every_command(copies, command):
    """Every command that reads study.yaml refuses it (`status` reads it when it recounts the rows; while
    progress.json matches the rows it reads no YAML at all)."""
    bombed, other = copies
    (bombed / "study.yaml").write_text("name: bomb\nmode: search\n" + alias_bomb())
    args = {"compare": [command, str(other), str(bombed)], "status": [command, str(bombed), "--recount"]}.get(
        command, [command, str(bombed)])
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "study.yaml:" in result.output and "anchors and aliases" in result.output, result.output


def test_a_0_2_folder_still_compares_and_reports(copies, tmp_path):
    a, b = copies
    cmp = compare_studies([a, b])
    assert cmp.objectives == {"psnr_y": "max", "throughput": "max"} and list(cmp.studies["complete"]) == [3, 3]
    result = runner.invoke(app, ["report", str(a)])
    assert result.exit_code == 0, result.output
    assert (a / "report" / "report.html").exists() and (a / "report" / "front.csv").exists()
