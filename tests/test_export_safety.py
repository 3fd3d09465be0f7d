"""`sr-search export` against hostile trial ids and outputs (issue 12, case 10) and its rough edges (issue 17):
ids are the runner's (`1` and `0001` alike), every path derived from them stays inside the study directory, the
output is the only file written (atomically), a missing checkpoint says what works, no TracerWarning."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sr_search import PRESETS, ArchSpec, SrSearchError, build
from sr_search.cli import app
from sr_search.results.export import export
from sr_search.results.store import spec_columns, write_trial_row
from sr_search.results.study_dir import StudyDir

runner = CliRunner()


def kept(study_dir: Path, trial_id: str, spec: ArchSpec, *, weights: bool = True) -> None:
    if weights:
        (study_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save(build(spec).state_dict(), study_dir / "checkpoints" / f"{trial_id}.pt")
    write_trial_row(study_dir, {"study": "s", "trial_id": trial_id, "status": "complete", "seed": 3,
                                **spec_columns(spec)})


def files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A study folder with trial 0001 kept, and an 'evil' study next to it that a hostile id would reach."""
    study, evil = tmp_path / "home" / "runs" / "study", tmp_path / "home" / "evil"
    kept(study, "0001", PRESETS["repsr-m4c8-x4"])
    kept(evil, "0666", PRESETS["ecbsr-m4c8-x4"])
    for name in ("evil.parquet", "evil.pt"):  # what ../../evil would have read
        (tmp_path / "home" / name).write_bytes((evil / "trials" / "0666.parquet").read_bytes())
    return study, tmp_path


@pytest.mark.parametrize("trial", ["../../evil", "../../evil/trials/0666", "/tmp/evil", str(Path("/") / "etc" / "x"),
                                   "0001/../../../evil", "1e3", "-1", "0x1", "0001 ", "", "٠٠٠١"])
def test_hostile_trial_ids_are_refused_and_nothing_is_written(world, trial):
    study, root = world
    before = files(root)
    result = runner.invoke(app, ["export", str(study), "--trial", trial])
    assert result.exit_code == 1, result.output
    assert "is not a trial id of this tool (four or more digits, e.g. 0007)" in result.output
    assert files(root) == before


def test_trial_1_and_0001_are_the_same_trial(world):
    study, _ = world
    for trial in ("1", "0001", "00001"):
        result = runner.invoke(app, ["export", str(study), "--trial", trial])
        assert result.exit_code == 0, result.output
        assert f"exported {study / 'export' / '0001.pt'}" in result.output
    assert "TracerWarning" not in result.output and "Warning" not in result.output


def test_a_symlink_out_of_the_study_is_refused(world):
    study, root = world
    evil_ckpt = root / "home" / "evil" / "checkpoints" / "0666.pt"
    kept(study, "0002", PRESETS["ecbsr-m4c8-x4"], weights=False)
    (study / "checkpoints" / "0002.pt").symlink_to(evil_ckpt)
    with pytest.raises(SrSearchError, match="outside the study directory"):
        export(study, "2")
    (study / "trials" / "0003.parquet").symlink_to(root / "home" / "evil" / "trials" / "0666.parquet")
    result = runner.invoke(app, ["export", str(study), "--trial", "3"])
    assert result.exit_code == 1 and "outside the study directory" in result.output
    os.symlink(root / "home", study / "export")  # the default output folder points elsewhere
    before = files(root)
    result = runner.invoke(app, ["export", str(study), "--trial", "1"])
    assert result.exit_code == 1 and "outside the study directory" in result.output
    assert files(root) == before


def test_out_is_the_only_file_written(world):
    study, root = world
    before = files(root)
    out = root / "models"
    out.mkdir()
    result = runner.invoke(app, ["export", str(study), "--trial", "1", "--out", str(out / "winner.pt")])
    assert result.exit_code == 0, result.output
    assert files(root) - before == {out / "winner.pt"}
    result = runner.invoke(app, ["export", str(study), "--trial", "1", "--out", str(out)])  # a folder
    assert result.exit_code == 0 and (out / "0001.pt").is_file()
    assert files(root) - before == {out / "winner.pt", out / "0001.pt"}
    result = runner.invoke(app, ["export", str(study), "--trial", "1", "--out", str(root / "no" / "such" / "x.pt")])
    assert result.exit_code == 1 and "does not exist" in result.output and not (root / "no").exists()
    assert torch.jit.load(str(out / "winner.pt"))(torch.rand(1, 1, 8, 8)).shape == (1, 1, 32, 32)


def test_a_full_disk_during_export_names_the_path_and_leaves_nothing(world, monkeypatch):
    study, root = world
    before = files(root)

    def save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.jit.ScriptModule, "save", save)
    result = runner.invoke(app, ["export", str(study), "--trial", "1"])
    assert result.exit_code == 2, result.output
    assert f"cannot write {study / 'export' / '0001.pt'}: No space left on device" in result.output
    assert files(root) == before  # no partial export, no .tmp


def test_without_kept_weights_it_says_what_works(world):
    study, _ = world
    kept(study, "0004", PRESETS["rtsrn-x2"], weights=False)
    result = runner.invoke(app, ["export", str(study), "--trial", "4"])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "keep_checkpoints: false" in message and "resuming a study never trains a finished trial again" in message
    assert "keep_checkpoints: true" in message and "factors: {}" in message and "seeds: [3]" in message
    assert f"base: {PRESETS['rtsrn-x2'].to_json()}" in message
    assert "re-run it" not in message


def test_export_prints_no_tracer_warning_for_an_unshuffle_network(tmp_path, recwarn):
    spec = ArchSpec(block="rep", scale=2, colors=3, channels=8, depth=1, unshuffle=2)
    kept(tmp_path, "0005", spec)
    result = runner.invoke(app, ["export", str(tmp_path), "--trial", "5"])
    assert result.exit_code == 0, result.output
    assert "TracerWarning" not in result.output
    assert not [w for w in recwarn if issubclass(w.category, torch.jit.TracerWarning)]


def test_trial_ids_are_normalised_and_checked():
    from sr_search.results.study_dir import normalize_trial_id

    assert [normalize_trial_id(t) for t in ("7", "07", "0007", "00007", "12345")] == ["0007"] * 4 + ["12345"]
    for bad in ("../7", "7a", "-7", "+7", "7.0", " ", "0007/x"):
        with pytest.raises(SrSearchError, match="not a trial id"):
            normalize_trial_id(bad)
    assert StudyDir("/s").trial_file("0007") == Path("/s/trials/0007.parquet")


def test_export_of_a_trial_whose_row_was_set_aside_says_so(world):
    study, _ = world
    row = study / "trials" / "0001.parquet"
    row.write_bytes(row.read_bytes()[:100])
    result = runner.invoke(app, ["export", str(study), "--trial", "1"])
    assert result.exit_code == 1
    assert f"warning: {row} is unreadable" in result.output
    assert "trial 0001's row was damaged and set aside" in result.output and "--resume" in result.output
    result = runner.invoke(app, ["export", str(study), "--trial", "1"])
    assert "set aside" in result.output and "warning" not in result.output
