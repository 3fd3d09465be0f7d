"""Pareto-safe successive halving on Ray Tune's scheduler extension point (the rule: sr_search/run/halving.py).

`ParetoHalving` is a `TrialScheduler`: a trial reports at each rung (with a checkpoint of its model, optimizer and
sampler state); if it is in the top 1/reduction_factor of what reached that rung so far it continues at once,
otherwise it is PAUSED (Tune keeps its checkpoint) and resumed, from that checkpoint, when enough candidates arrive
behind it. Once nothing runs and every trial of the session exists, the lowest rung with waiting trials is
complete: its top share and its first front continue and the rest are stopped (status `pruned`). A study's named
baselines (paper presets) always train to the full budget: they are the reference points of its front. It also
caps how many trials run at once (`concurrency`), since a paused trial must not hold a slot.

`RungLedger` is the driver's record of rungs in the study folder (`rungs/<id>.json`): each trial's rung points, its
promotions and its latest rung checkpoint, so a resumed study ranks as before and continues paused trials from
their checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ...results.study_dir import StudyDir, atomic_write
from ..halving import promotable


class RungLedger:
    """Rung points, promotions and latest rung checkpoints of every trial, kept in the study folder by the driver."""

    def __init__(self, folder: StudyDir) -> None:
        self.folder = folder
        self.entries: dict[str, dict[str, Any]] = {}
        #: per rung, the points that reached it (trial id -> point) and a counter of changes (for cached rankings)
        self.rungs: dict[int, dict[str, list[float]]] = {}
        self.versions: dict[int, int] = {}
        for path in sorted(folder.rungs.glob("*.json")) if folder.rungs.is_dir() else ():
            try:
                entry = json.loads(path.read_text())
                self.entries[entry["trial_id"]] = entry
                for rung, point in entry["points"].items():
                    self._index(entry["trial_id"], int(rung), point)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a damaged ledger entry only loses that trial's ranking history

    def _entry(self, trial_id: str) -> dict[str, Any]:
        return self.entries.setdefault(trial_id, {"trial_id": trial_id, "points": {}, "promoted": [],
                                                  "checkpoint": None})

    def _save(self, trial_id: str) -> None:
        text = json.dumps(self.entries[trial_id])
        atomic_write(self.folder.rung_file(trial_id), lambda tmp: tmp.write_text(text))

    def _index(self, trial_id: str, rung: int, point: list[float]) -> None:
        self.rungs.setdefault(rung, {})[trial_id] = point
        self.versions[rung] = self.versions.get(rung, 0) + 1

    def record(self, trial_id: str, rung: int, point: Sequence[float]) -> None:
        values = [float(v) for v in point]
        self._entry(trial_id)["points"][str(rung)] = values
        self._index(trial_id, rung, values)
        self._save(trial_id)

    def promote(self, trial_id: str, rung: int) -> None:
        entry = self._entry(trial_id)
        if rung not in entry["promoted"]:
            entry["promoted"].append(rung)
            self._save(trial_id)

    def checkpoint(self, trial_id: str, uri: str) -> None:
        self._entry(trial_id)["checkpoint"] = uri
        self._save(trial_id)

    def table(self, rung: int) -> dict[str, list[float]]:
        """The points that reached `rung` (kept as they are recorded: no scan of every trial)."""
        return dict(self.rungs.get(rung, {}))

    def version(self, rung: int) -> int:
        """Changes at `rung` so far: a ranking of the rung is valid while this stays the same."""
        return self.versions.get(rung, 0)

    def promoted(self, trial_id: str, rung: int) -> bool:
        return rung in self.entries.get(trial_id, {}).get("promoted", [])

    def latest_checkpoint(self, trial_id: str) -> str | None:
        return self.entries.get(trial_id, {}).get("checkpoint")


class ParetoHalving(FIFOScheduler):
    def __init__(self, ledger: RungLedger, directions: Sequence[str], reduction_factor: int, concurrency: int,
                 expected: int) -> None:
        super().__init__()
        self.ledger, self.directions = ledger, list(directions)
        self.rf, self.concurrency, self.expected = reduction_factor, concurrency, expected
        self.waiting: dict[str, int] = {}  # Tune trial id -> the rung it waits at
        self._ranked: dict[tuple[int, bool], tuple[int, frozenset[str]]] = {}  # (rung, complete) -> (version, ids)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        rung, trial_id = result.get("rung"), _sr_id(trial)
        if rung is None:
            return TrialScheduler.CONTINUE
        point = result.get("rung_point")
        if point is not None:
            self.ledger.record(trial_id, int(rung), point)
        if trial.config.get("baseline"):  # a named baseline is a reference point: ranked with the others, never paused
            return TrialScheduler.CONTINUE
        if self._may_continue(trial_id, int(rung), complete=False):
            return TrialScheduler.CONTINUE
        self.waiting[trial.trial_id] = int(rung)
        return TrialScheduler.PAUSE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self.waiting.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.waiting.pop(trial.trial_id, None)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        if sum(t.status == Trial.RUNNING for t in trials) >= self.concurrency:
            return None
        paused = sorted((t for t in trials if t.status == Trial.PAUSED and t.trial_id in self.waiting),
                        key=lambda t: -self.waiting[t.trial_id])  # the highest rung first
        for trial in paused:
            if self._may_continue(_sr_id(trial), self.waiting[trial.trial_id], complete=False):
                return trial
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        busy = any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials)
        if paused and not busy and len(trials) >= self.expected:
            return self._complete_lowest_rung(tune_controller, paused)
        return None

    def _may_continue(self, trial_id: str, rung: int, complete: bool) -> bool:
        """Promoted before, or in the top share of the rung now (then recorded as promoted)."""
        if self.ledger.promoted(trial_id, rung):
            return True
        if trial_id in self._promotable(rung, complete):
            self.ledger.promote(trial_id, rung)
            return True
        return False

    def _promotable(self, rung: int, complete: bool) -> frozenset[str]:
        """The rule's answer for a rung, ranked once per change of the rung (a point recorded), not once per paused
        trial per free slot: `choose_trial_to_run` asks it for every paused trial on every call."""
        version = self.ledger.version(rung)
        cached = self._ranked.get((rung, complete))
        if cached is None or cached[0] != version:
            ids = frozenset(promotable(self.ledger.rungs.get(rung, {}), self.directions, self.rf, complete=complete))
            cached = self._ranked[(rung, complete)] = (version, ids)
        return cached[1]

    def _complete_lowest_rung(self, tune_controller: Any, paused: list[Trial]) -> Trial | None:
        """Nothing more can reach the lowest waiting rung: its top share continues, the rest stop (pruned)."""
        lowest = min(self.waiting[t.trial_id] for t in paused)
        chosen = None
        for trial in [t for t in paused if self.waiting[t.trial_id] == lowest]:
            if self._may_continue(_sr_id(trial), lowest, complete=True):
                chosen = chosen or trial
            else:
                self.waiting.pop(trial.trial_id, None)
                tune_controller.stop_trial(trial)
        return chosen

    def debug_string(self) -> str:
        return f"Pareto successive halving ({len(self.waiting)} trials waiting at a rung)"


def _sr_id(trial: Trial) -> str:
    return trial.config["trial_id"]
