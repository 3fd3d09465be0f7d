"""Compacted parts: rows read the same before and after compaction, a compaction killed (SIGKILL) at any step loses
and duplicates nothing, a rewritten row wins over its compacted copy, and ids past 9999 sort numerically."""

from __future__ import annotations

import os
import shutil
import signal
import warnings
from pathlib import Path

import pandas as pd
import pytest

from sr_search import PRESETS
from sr_search.errors import StudyDataWarning
from sr_search.results import parts
from sr_search.results.store import compact, consolidate, load_results, read_trial_row, spec_columns, write_trial_row
from sr_search.results.study_dir import StudyDir

SPEC = spec_columns(PRESETS["rtsrn-x2"])


def row(number: int, **values) -> dict:
    status = ("complete", "complete", "pruned", "failed", "infeasible")[number % 5]
    extra = {"psnr_y": 28.0 + number / 100, "throughput": 100.0 - number} if status == "complete" else {}
    if status == "failed":
        extra = {"error": "out of memory"}
    if status == "pruned":
        extra = {"rung_psnr_y": 27.0, "rung": 0}
    return {"study": "s", "trial_id": f"{number:04d}", "status": status, **SPEC, "seed": number,
            "train_iterations": 10 if status != "failed" else None, **extra, **values}


def make(folder: StudyDir, numbers) -> None:
    folder.root.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        write_trial_row(folder, row(n))


def frame(folder: StudyDir) -> pd.DataFrame:
    return load_results(folder).reset_index(drop=True)


def test_compaction_keeps_every_row_and_value(tmp_path: Path) -> None:
    folder = StudyDir(tmp_path / "s")
    make(folder, range(30))
    before = frame(folder)
    assert compact(folder, min_rows=40) == 0  # below the threshold: nothing moves
    assert compact(folder) == 30
    assert parts.loose_files(folder) == [] and len(parts.read_manifest(folder).parts) == 1
    after = frame(folder)
    pd.testing.assert_frame_equal(before, after[before.columns], check_dtype=False)
    assert after["trial_id"].tolist() == [f"{n:04d}" for n in range(30)]
    make(folder, range(30, 40))  # more rows, then a second part
    write_trial_row(folder, row(3, psnr_y=40.0, status="complete", throughput=5.0))  # a row written again
    assert frame(folder).set_index("trial_id").loc["0003", "psnr_y"] == 40.0  # loose wins over the part
    assert compact(folder) == 11
    df = frame(folder)
    assert len(df) == 40 and df["trial_id"].is_unique
    assert df.set_index("trial_id").loc["0003", "psnr_y"] == 40.0  # the later part wins
    assert read_trial_row(folder, "0003")["psnr_y"] == 40.0 and read_trial_row(folder, "0031")["seed"] == 31
    assert read_trial_row(folder, "0099") is None
    assert parts.row_ids(folder) == {f"{n:04d}" for n in range(40)}
    assert len(pd.read_parquet(consolidate(folder))) == 40
    # only what is needed: two columns and the id and status
    small = load_results(folder, columns=["psnr_y", "throughput"])
    assert list(small.columns) == ["trial_id", "status", "psnr_y", "throughput"] and len(small) == 40


def test_trial_ids_past_9999_sort_numerically(tmp_path: Path) -> None:
    folder = StudyDir(tmp_path / "s")
    make(folder, [9998, 10000, 9999, 10001, 1001])
    assert frame(folder)["trial_id"].tolist() == ["1001", "9998", "9999", "10000", "10001"]
    compact(folder)
    make(folder, [100000])
    assert frame(folder)["trial_id"].tolist() == ["1001", "9998", "9999", "10000", "10001", "100000"]


def test_a_damaged_loose_file_is_set_aside_by_compaction_and_the_rest_moves(tmp_path: Path) -> None:
    folder = StudyDir(tmp_path / "s")
    make(folder, range(6))
    path = folder.trial_file("0002")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(StudyDataWarning, match="0002.parquet is unreadable"):
        assert compact(folder) == 5
    assert (folder.set_aside_dir / "trials" / "0002.parquet").exists()
    assert frame(folder)["trial_id"].tolist() == ["0000", "0001", "0003", "0004", "0005"]


def compact_and_die_at(folder: StudyDir, target: int) -> int:
    """Compact `folder` in a forked child that SIGKILLs itself at its `target`-th step (a temporary file written, a
    rename done, a loose file removed); returns the child's wait status."""
    from sr_search.results import rows as store

    pid = os.fork()
    if pid:
        return os.waitpid(pid, 0)[1]
    try:  # the child: never returns into pytest
        calls = [0]

        def step() -> None:
            calls[0] += 1
            if calls[0] == target:
                os.kill(os.getpid(), signal.SIGKILL)

        real_replace, real_unlink, real_write = os.replace, Path.unlink, store.pq.write_table

        def replace(src, dst, *a, **k):
            step()  # killed with the temporary file written, before its rename
            real_replace(src, dst, *a, **k)
            step()  # killed right after the rename

        def unlink(self, *a, **k):
            real_unlink(self, *a, **k)
            step()  # killed after removing some of the loose files

        def write_table(table, where, *a, **k):
            real_write(table, where, *a, **k)
            step()  # killed with a temporary part on disk

        os.replace, Path.unlink, store.pq.write_table = replace, unlink, write_table
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.compact(folder)
        os._exit(0)
    except BaseException:
        os._exit(3)


def test_a_compaction_killed_at_any_step_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    pristine = StudyDir(tmp_path / "pristine")
    make(pristine, range(4))
    compact(pristine)  # a first part already there: the kill hits a folder with parts and loose files
    make(pristine, range(3, 6))  # 3 written again: loose over part
    expected = frame(pristine)
    killed_at = []
    for target in range(1, 80):
        folder = StudyDir(tmp_path / f"k{target}")
        shutil.copytree(pristine.root, folder.root)
        status = compact_and_die_at(folder, target)
        with warnings.catch_warnings():
            warnings.simplefilter("error", StudyDataWarning)  # nothing half-written may look damaged
            pd.testing.assert_frame_equal(frame(folder)[expected.columns], expected, check_dtype=False)
            compact(folder)  # the next compaction cleans up and completes
            pd.testing.assert_frame_equal(frame(folder)[expected.columns], expected, check_dtype=False)
        assert parts.loose_files(folder) == []
        named = {p["file"] for p in parts.read_manifest(folder).parts}
        assert {p.name for p in parts.parts_dir(folder).iterdir()} == named  # no orphan, no temporary file
        assert not list(folder.trials.glob(".*"))
        shutil.rmtree(folder.root)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            killed_at.append(target)
            continue
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        break
    else:
        pytest.fail("the compaction never finished")
    # every step of the way: temp part, part renamed, temp manifest, manifest renamed, each of 3 loose files removed
    assert len(killed_at) >= 7, killed_at
