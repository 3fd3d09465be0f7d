"""The driver's Tune callback: the one writer of a study folder (docs/architecture.md, "Decisions
the code builds on").

Workers send everything back with their results; `StudyRecorder` writes each row (`trials/<id>.parquet`, atomic),
keeps fresh timings in the timing cache, copies kept weights out of the trial's Tune checkpoint, writes a `failed`
row for a trial that crashed, and keeps the progress (`progress.json` and the progress display) up to date.
"""

from __future__ import annotations

import json

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from ...columns import TrialRow, TrialStatus
from ...model.spec import ArchSpec
from ...results.progress import ProgressState, time_line, write_progress
from ...results.parts import loose_files
from ...results.store import COMPACT_EVERY, compact, load_results, row_from_json, write_trial_row
from ...results.study_dir import StudyDir, atomic_write
from ...study.model import Study
from ..plan import task_of
from ..timing.cache import TimingCache
from ..timing.result import Timing
from ..trial import task_columns
from .halving import RungLedger
from .trainable import WEIGHTS, checkpoint_uri

Show = Callable[[ProgressState], None]


class StudyRecorder(tune.Callback):
    def __init__(self, study: Study, folder: StudyDir, cache: TimingCache, total: int, dashboard: str | None,
                 show: Show, ledger: RungLedger | None = None, every_s: float = 5.0, min_gap_s: float = 0.5,
                 compact_every: int = COMPACT_EVERY) -> None:
        self.study, self.folder, self.cache = study, folder, cache
        self.show, self.every_s, self.min_gap_s = show, every_s, min_gap_s
        rows = load_results(folder, columns=["psnr_y", *study.objectives])
        self.state = ProgressState.start(total, rows, study.objectives, dashboard)
        self.last_write = 0.0
        self.pending = False  # an event whose update was throttled: written by the next update
        self.compact_every = compact_every
        self.loose = len(loose_files(folder))  # row files not compacted yet
        if self.loose >= compact_every:  # a 0.2 folder, or one whose driver died before compacting: once, now
            compact(folder)
            self.loose = 0
        self.ledger = ledger
        self.written: set[str] = set()
        self.rung_rows: dict[str, str] = {}

    # --- rows ----------------------------------------------------------------------------------------------

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        trial_id = trial.config.get("trial_id")
        if isinstance(result.get("timing"), str):  # fresh timings: the cache serves them to later trials
            spec = ArchSpec.from_json(trial.config["arch"])
            for timing in timings_of(result["timing"]):
                self.cache.put(spec.deploy_key(), self.study.timing_protocol(timing.protocol), timing)
        if isinstance(result.get("row"), str):  # the trial's outcome: write it before Optuna is told
            row = row_from_json(result["row"])
            self._write_row(row)
            self.written.add(trial_id)
            self.state.finish(trial_id, row)
            self._update(force=True)
        elif isinstance(result.get("rung_row"), str):  # the row it leaves if stopped at this rung
            self.rung_rows[trial_id] = result["rung_row"]
            self.state.progress(trial_id, trial.config, result, self.study.train.iterations)
            self._update()
        elif "iteration" in result:
            self.state.progress(trial_id, trial.config, result, self.study.train.iterations)
            self._update()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial_id = trial.config.get("trial_id")
        if trial_id is None:
            return
        if trial_id not in self.written and trial_id in self.rung_rows:  # stopped at a rung: pruned
            row = row_from_json(self.rung_rows[trial_id])
            self._write_row(row)
            self.written.add(trial_id)
            self.state.finish(trial_id, row)
        elif self.study.keep_checkpoints and trial.checkpoint is not None:
            self._copy_weights(trial.checkpoint, self.folder.checkpoint(trial_id))
        self.state.stop(trial_id)
        self._update(force=True)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        """A rung checkpoint: remember where it is, so a resumed study continues the trial from it."""
        trial_id = trial.config.get("trial_id")
        if self.ledger is not None and trial_id is not None and trial_id not in self.written:
            self.ledger.checkpoint(trial_id, checkpoint_uri(checkpoint))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial that crashed (its worker died, or an exception escaped) gets a `failed` row with the reason."""
        config = trial.config
        if "trial_id" not in config:
            return
        reason = "trial crashed"
        if trial.error_file and Path(trial.error_file).exists():
            lines = Path(trial.error_file).read_text().strip().splitlines()
            reason = f"trial crashed: {lines[-1] if lines else 'no message'}"
        row = {**task_columns(task_of(config), self.study.name), "status": TrialStatus.FAILED, "error": reason}
        self._write_row(row)
        self.state.finish(config["trial_id"], row)
        self._update(force=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state.start_trial(trial.config.get("trial_id"), trial.config, self.study.train.iterations)
        self._update(force=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.cache.flush()  # the timing journal folded: the parquet file alone is the whole cache
        self.state.end()
        self.state.time_line = time_line(self.folder)  # once, here: `status` of a finished study reads no row
        self._update(final=True)

    # --- helpers -------------------------------------------------------------------------------------------

    def _copy_weights(self, checkpoint: Any, target: Path) -> None:
        """The trained weights, from the trial's Tune checkpoint (a local folder or any pyarrow filesystem), written
        through the study folder's atomic writer (flushed; no temporary file left by a full disk, which is named)."""
        filesystem = checkpoint.filesystem or pafs.LocalFileSystem()

        def copy(tmp: Path) -> None:
            with filesystem.open_input_stream(f"{checkpoint.path}/{WEIGHTS}") as source, open(tmp, "wb") as out:
                while chunk := source.read(1 << 24):
                    out.write(chunk)

        atomic_write(target, copy)

    def _write_row(self, row: TrialRow) -> None:
        """One row, O(1): its own file (atomic); every `compact_every` loose files, one compaction moves them into
        a part (`store.compact`: crash-safe at every step), so readers scan a few parts, not a file per trial."""
        write_trial_row(self.folder, row)
        self.loose += 1
        if self.loose >= self.compact_every:
            compact(self.folder)
            self.loose = 0

    def _update(self, force: bool = False, final: bool = False) -> None:
        """Write progress.json and show the line, from one snapshot. A change of counts (`force`) is written at most
        every `min_gap_s` (at hundreds of GPUs trials start and finish several times a second), iteration reports
        every `every_s`; a throttled change is written by the next update, the end always."""
        now = time.time()
        gap = self.min_gap_s if force or self.pending else self.every_s
        if not final and now - self.last_write < gap:
            self.pending = self.pending or force
            return
        self.last_write, self.pending = now, False
        write_progress(self.folder, self.state.snapshot())
        self.show(self.state)


def timings_of(text: str) -> list[Timing]:
    """The timings a trial sent: a JSON list (one per protocol it timed under), or one timing as 0.2 sent it."""
    data = json.loads(text)
    return [Timing.model_validate(t) for t in (data if isinstance(data, list) else [data])]
