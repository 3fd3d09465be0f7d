"""A study folder after faults (issue 12, cases 3 and 9): a damaged row file is named, moved aside and its trial
runs again; results.parquet never shrinks; a full disk names the path, leaves no temporary file, and what was
written before stays valid. No Ray needed (the planner and Optuna's side are exercised directly)."""

from __future__ import annotations

import errno
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sr_search import PRESETS, load_results
from sr_search.cli import app
from sr_search.errors import StudyDataWarning, StudyWriteError
from sr_search.results.store import consolidate, read_trial_row, write_trial_row
from sr_search.results.study_dir import StudyDir
from study_files import trial_row

runner = CliRunner()


def row(trial_id: str, psnr: float = 30.0) -> dict:
    return trial_row(trial_id, psnr_y=psnr, throughput=100.0 - psnr, latency_ms=1.0 + psnr / 100, params_deploy=193356)


@pytest.fixture
def study(tmp_path: Path) -> StudyDir:
    folder = StudyDir(tmp_path / "run")
    for i, psnr in enumerate((30.0, 31.0, 32.0)):
        write_trial_row(folder, row(f"{i:04d}", psnr))
    return folder


def damage(path: Path, how: str) -> bytes:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "flipped":  # bit rot in a stored value: the last byte of the psnr_y column's data
        meta = pq.read_metadata(path).row_group(0)
        chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "psnr_y")
        flipped = bytearray(data)
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        flipped[start + chunk.total_compressed_size - 1] ^= 0x01
        path.write_bytes(bytes(flipped))
    elif how == "text":
        path.write_text("not parquet at all")
    return path.read_bytes()


# --- case 3: a truncated or corrupt trials/<id>.parquet -----------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "empty", "flipped", "text"])
def test_a_damaged_row_is_named_moved_aside_and_the_rest_loads(study, how):
    bad = study.trial_file("0001")
    content = damage(bad, how)
    with pytest.warns(StudyDataWarning, match=r"trials/0001\.parquet is unreadable .* moved to .*set_aside/trials/"
                                              r"0001\.parquet; trial 0001 counts as not done and runs again"):
        df = load_results(study)
    assert list(df["trial_id"]) == ["0000", "0002"]
    assert not bad.exists()
    kept = study.set_aside_dir / "trials" / "0001.parquet"
    assert kept.read_bytes() == content  # moved, never deleted
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to warn about
        assert list(load_results(study)["trial_id"]) == ["0000", "0002"]
    damage(bad.parent / "0000.parquet", how)  # a second damaged file keeps the first one aside
    with pytest.warns(StudyDataWarning):
        assert list(load_results(study)["trial_id"]) == ["0002"]
    assert kept.read_bytes() == content and (study.set_aside_dir / "trials" / "0000.parquet").exists()


def test_a_row_file_holding_another_trials_row_is_set_aside(study):
    copy = study.trials / "0003.parquet"
    copy.write_bytes(study.trial_file("0000").read_bytes())
    with pytest.warns(StudyDataWarning, match="holds the row of trial '0000'"):
        df = load_results(study)
    assert list(df["trial_id"]) == ["0000", "0001", "0002"]  # every finished trial, once


def test_read_trial_row_of_a_damaged_file_is_none_with_a_warning(study):
    damage(study.trial_file("0002"), "truncated")
    with pytest.warns(StudyDataWarning, match="0002.parquet is unreadable"):
        assert read_trial_row(study, "0002") is None
    assert read_trial_row(study, "0001")["psnr_y"] == 31.0


def test_results_parquet_never_shrinks(study):
    consolidate(study)
    before = study.results.read_bytes()
    damage(study.trial_file("0001"), "truncated")
    with pytest.warns(StudyDataWarning) as seen:
        consolidate(study)
    assert any("keeps its 3 rows: the trial files hold 2" in str(w.message) for w in seen)
    assert study.results.read_bytes() == before and pq.read_metadata(study.results).num_rows == 3
    write_trial_row(study, row("0001", 31.5))  # the trial ran again
    consolidate(study)
    assert pq.read_table(study.results).column("psnr_y").to_pylist() == [30.0, 31.5, 32.0]


def test_a_damaged_results_parquet_is_set_aside_and_rewritten(study):
    consolidate(study)
    damage(study.results, "truncated")
    with pytest.warns(StudyDataWarning, match="results.parquet is unreadable"):
        consolidate(study)
    assert pq.read_metadata(study.results).num_rows == 3
    assert (study.set_aside_dir / "results.parquet").exists()
    for f in study.trials.glob("*.parquet"):  # a folder copied without its trial files
        f.unlink()
    damage(study.results, "flipped")
    with pytest.warns(StudyDataWarning, match="results.parquet is unreadable"):
        assert len(load_results(study)) == 0
    assert (study.set_aside_dir / "results.parquet.1").exists()


def test_report_pareto_and_status_name_the_bad_file_and_go_on(study):
    from sr_search.results.progress import ProgressState, write_progress

    consolidate(study)
    state = ProgressState.start(3, load_results(study), {"psnr_y": "max", "throughput": "max"}, None)
    state.end()
    write_progress(study, state.snapshot())
    damage(study.trial_file("0001"), "truncated")
    result = runner.invoke(app, ["pareto", str(study.root)])
    assert result.exit_code == 0, result.output
    assert f"warning: {study.trial_file('0001')} is unreadable" in result.output
    assert "0002" in result.output and "0001" not in result.output.split("warning:")[0]
    for command in (["status", str(study.root)], ["report", str(study.root)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    assert "[2/3]" in runner.invoke(app, ["status", str(study.root)]).output


def test_a_trial_whose_row_was_set_aside_runs_again_on_resume(tmp_path):
    """The Optuna trial is COMPLETE but its row is gone: the planner runs it again under its own id, and telling
    Optuna again is a no-op (so the study ends with every trial once, not a '2/3, continue with --resume' loop)."""
    import optuna

    from sr_search.run.plan import plan_session
    from sr_search.run.trial import TrialTask
    from sr_search.run.tune.searcher import TrialBook
    from sr_search.study.config import load_study

    (tmp_path / "space.yaml").write_text("params:\n  block: plain\n  scale: 2\n  colors: 3\n  channels: 8\n"
                                         "  depth: 1\n")
    (tmp_path / "s.yaml").write_text("name: s\nspace: space.yaml\nn_trials: 3\nsampler: random\n")
    study = load_study(tmp_path / "s.yaml")
    folder = StudyDir(tmp_path / "run")
    folder.root.mkdir()
    book = TrialBook(study, folder.storage_url)
    for i in range(3):
        book.annotate(book.ask(), TrialTask(f"{i:04d}", PRESETS["rtsrn-x2"], seed=i))
        write_trial_row(folder, row(f"{i:04d}", 30.0 + i))
        assert book.tell(i, row(f"{i:04d}", 30.0 + i))
    consolidate(folder)
    assert plan_session(study, load_results(folder).to_dict("records"), book.asked()).to_run == 0

    damage(folder.trial_file("0001"), "truncated")
    with pytest.warns(StudyDataWarning):
        rows = load_results(folder)
    session = plan_session(study, rows.to_dict("records"), book.asked())
    assert [t.trial_id for t in session.rerun] == ["0001"] and session.to_run == 1 and session.total == 3
    assert session.rerun[0].seed == 1 and session.sampled == 0
    write_trial_row(folder, row("0001", 31.0))  # what the re-run writes
    assert not book.tell(1, row("0001", 31.0))  # Optuna already knew: nothing told twice
    assert plan_session(study, load_results(folder).to_dict("records"), book.asked()).to_run == 0
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in book.study.trials) == 3


# --- case 9: a full disk during a run -----------------------------------------------------------------------


def full_disk(monkeypatch, module=pq):
    """`write_table` writes half a file, then the disk is full."""
    real = module.write_table

    def write_table(table, where, *args, **kwargs):
        real(table, where, *args, **kwargs)
        Path(where).write_bytes(Path(where).read_bytes()[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "write_table", write_table)


def no_litter(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")], list(folder.rglob("*"))


def test_a_full_disk_names_the_path_and_keeps_what_was_written(study, monkeypatch):
    consolidate(study)
    results_before = study.results.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(StudyWriteError) as err:
        write_trial_row(study, row("0003"))
    assert err.value.errno == errno.ENOSPC and err.value.path == study.trial_file("0003")
    assert str(study.trial_file("0003")) in str(err.value) and "No space left on device" in str(err.value)
    with pytest.raises(StudyWriteError, match=f"cannot write {study.results}: No space left"):
        consolidate(study)
    with pytest.raises(StudyWriteError, match="0001.parquet: No space left"):
        write_trial_row(study, row("0001", 99.0))  # replacing a row: the old one stays
    no_litter(study.root)
    assert study.results.read_bytes() == results_before
    monkeypatch.undo()
    assert list(load_results(study)["psnr_y"]) == [30.0, 31.0, 32.0]  # what was written before is valid
    write_trial_row(study, row("0003", 33.0))  # space again: carries on from there
    consolidate(study)
    assert pq.read_metadata(study.results).num_rows == 4


def test_a_full_disk_in_progress_and_timing_cache_names_the_path(study, monkeypatch):
    from sr_search.results.progress import write_progress
    from sr_search.run.timing.cache import TimingCache
    from sr_search.run.timing.result import Timing
    from sr_search.study.protocols import PROTOCOLS

    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):
        real_write_text(self, "{", encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(StudyWriteError, match=f"cannot write {study.progress}: No space left"):
        write_progress(study, {"total": 3})
    monkeypatch.undo()
    full_disk(monkeypatch)
    timing = Timing(protocol="cpu", device_name="cpu", precision="fp32", batch=1, input_shape=(1, 3, 8, 8),
                    output_shape=(1, 3, 16, 16), exclusive=True, reps=3, latency_ms=1.0, latency_ms_p90=1.1,
                    latency_ms_mean=1.0, throughput=1000.0, mpix_per_s=0.3, peak_mem_mb=0.0)
    with pytest.raises(StudyWriteError, match="timing_cache.parquet: No space left"):
        TimingCache(study.timing_cache).put("k", PROTOCOLS["cpu"], timing)
    no_litter(study.root)


def test_cli_names_the_path_of_a_full_disk_even_through_ray_tune(monkeypatch, tmp_path):
    from ray.tune.error import TuneError

    import sr_search.run.tune.launch

    target = tmp_path / "run" / "trials" / "0001.parquet"

    def launch(study, **kwargs):
        try:
            raise StudyWriteError(target, OSError(errno.ENOSPC, "No space left on device"))
        except StudyWriteError:
            raise TuneError("Traceback (most recent call last): ...") from None  # as Tune wraps a callback's error

    monkeypatch.setattr(sr_search.run.tune.launch, "launch", launch)
    root = Path(__file__).resolve().parents[1]
    result = runner.invoke(app, ["launch", str(root / "studies" / "smoke.yaml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"cannot write {target}: No space left on device" in result.output
    assert "everything written before it is kept" in result.output and "--resume" in result.output


# --- end to end: a full disk, then a damaged row, each followed by --resume (real Ray, tiny trials) ----------


def test_full_disk_and_damaged_row_lose_nothing_and_resume_runs_exactly_the_missing_trial(tmp_path, monkeypatch,
                                                                                       ray_cluster):
    from sr_search.results import store
    from sr_search.results.study_dir import atomic_write
    from sr_search.run.tune.launch import launch
    from sr_search.study.config import load_study

    (tmp_path / "space.yaml").write_text("params:\n  block: [plain, rep]\n  scale: 2\n  colors: 3\n  channels: 8\n"
                                         "  depth: 1\n")
    (tmp_path / "s.yaml").write_text(
        "name: s\nspace: space.yaml\nn_trials: 3\nsampler: random\ndata: {val_max_size: 48}\n"
        "timing: {device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}\n"
        "train: {iterations: 12, batch_size: 4, lr_patch: 16, val_every: 6}\n")
    study, out = load_study(tmp_path / "s.yaml"), tmp_path / "run"
    folder = StudyDir(out)

    real = store._atomic_write

    def disk_full_at_trial_1(table, path):
        if path.name == "0001.parquet":
            def half(tmp):
                tmp.write_bytes(b"PAR1 half a row")
                raise OSError(errno.ENOSPC, "No space left on device")
            atomic_write(path, half)
        real(table, path)

    monkeypatch.setattr(store, "_atomic_write", disk_full_at_trial_1)
    from sr_search.cli import _in_chain

    with pytest.raises(Exception) as stopped:  # Ray Tune wraps the recorder's error
        launch(study, out_dir=out, echo=lambda _: None)
    unwritten = _in_chain(stopped.value, StudyWriteError)
    assert unwritten is not None and unwritten.path == folder.trial_file("0001") and unwritten.errno == errno.ENOSPC
    no_litter(out)
    first = load_results(out)
    assert list(first["trial_id"]) == ["0000"] and (first["status"] == "complete").all()
    written = folder.trial_file("0000").read_bytes()
    monkeypatch.undo()

    launch(study, out_dir=out, resume=True, echo=lambda _: None)  # space again
    df = load_results(out)
    assert list(df["trial_id"]) == ["0000", "0001", "0002"] and (df["status"] == "complete").all()
    assert folder.trial_file("0000").read_bytes() == written  # the row written before the fault, untouched
    others = {t: folder.trial_file(t).read_bytes() for t in ("0000", "0002")}

    damage(folder.trial_file("0001"), "truncated")
    with pytest.warns(StudyDataWarning, match="0001.parquet is unreadable"):
        launch(study, out_dir=out, resume=True, echo=lambda _: None)
    after = load_results(out)
    assert list(after["trial_id"]) == ["0000", "0001", "0002"] and (after["status"] == "complete").all()
    assert {t: folder.trial_file(t).read_bytes() for t in others} == others  # only trial 0001 ran again
    assert (folder.set_aside_dir / "trials" / "0001.parquet").exists()
    assert pq.read_metadata(folder.results).num_rows == 3


def test_status_with_a_damaged_progress_file_reports_the_rows(study):
    study.progress.write_text('{"total": 3, "fin')
    result = runner.invoke(app, ["status", str(study.root)])
    assert result.exit_code == 0, result.output
    assert f"warning: {study.progress} is unreadable" in result.output
    assert "[3/?] complete 3" in result.output


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_a_resumed_search_samples_new_candidates_not_the_first_sessions_again(tmp_path: Path, sampler: str) -> None:
    """Seeded samplers restart their generator in a new process: a resumed session seeded as the first one drew the
    first session's random candidates again and trained duplicates (seen: trials 0016/0017 repeating 0000/0001)."""
    from sr_search.run.tune.searcher import TrialBook
    from sr_search.study.config import load_study

    (tmp_path / "space.yaml").write_text("params:\n  block: plain\n  scale: 2\n  colors: 3\n  channels: 8\n"
                                         "  depth: 1\n")
    (tmp_path / "s.yaml").write_text(f"name: s\nspace: space.yaml\nn_trials: 8\nsampler: {sampler}\nseed: 3\n")
    study = load_study(tmp_path / "s.yaml")
    folder = StudyDir(tmp_path / "run")
    folder.root.mkdir()

    def draws(book: TrialBook, n: int) -> list[int]:
        return [book.ask().suggest_int("x", 0, 10**9) for _ in range(n)]

    first = draws(TrialBook(study, folder.storage_url), 3)
    resumed = draws(TrialBook(study, folder.storage_url), 3)  # a new session: a new process's sampler
    assert not set(first) & set(resumed)
    other = StudyDir(tmp_path / "again")
    other.root.mkdir()
    assert draws(TrialBook(study, other.storage_url), 3) == first  # a fresh study with the same seed: the same draws
