"""The Optuna side of a study, on public APIs only: `TrialBook` (the study folder's Optuna study and the few things
the runner asks of it) and `StudySearcher`, a Ray Tune `Searcher` over `optuna.Study.ask` / `tell`.

At scale: the book reads Optuna's trials once when it opens (`get_trials`) and keeps which are asked and finished
itself, so telling a resumed study its known rows is one query plus one `tell` per untold row (0.2 listed every trial
per row). TPE, the default sampler, learns from the most recent `TPE_WINDOW` finished trials (`RecentTPESampler`):
its ask cost grows with the history it reads (measured in bench/driver_scale.py: about 0.12 s per ask at 1,000
trials and 0.5 s at 5,000 on a loaded 2-core machine, several seconds at 50,000), so the window keeps it constant,
and a study of up to `TPE_WINDOW` trials samples exactly as plain TPE does. This is the one place that reaches past
Optuna's public API (`RecentTPESampler` hands TPE a view of the study); were Optuna to change how TPE reads its
trials, the view still delegates, and TPE reads the whole history again (slower, not wrong).

Trial ids are Optuna trial numbers (`0007` is trial 7 in optuna-dashboard, the Tune trial `trial_0007` and the row
`trials/0007.parquet`). Each Optuna trial keeps its candidate's config and architecture as user attributes, so
optuna-dashboard shows what every trial was, and a trial that lost its row can run again as itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optuna
from ray.tune.search import Searcher

from ...columns import TrialRow, TrialStatus
from ...model.spec import ArchSpec
from ...results.store import row_from_json
from ...study.model import Study
from ..plan import Session, config_of
from ..trial import TrialTask

PRUNED, FAIL = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL
CONFIG_ATTR = "config"


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines (a study created, each trial told) left out while the runner talks to Optuna, and its log
    level as it was afterwards: a program that imports sr-search keeps its own Optuna logging."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


#: TPE's history: the most recent this many finished trials (a study of up to this many samples as plain TPE)
TPE_WINDOW = 1000


class _RecentTrials:
    """A study as TPE sees it: every attribute the study's own, its trial lists cut to the last `window` trials."""

    def __init__(self, study: optuna.Study, window: int) -> None:
        self._study, self._window = study, window

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        return self._study.get_trials(*args, **kwargs)[-self._window:]

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        return self._study._get_trials(*args, **kwargs)[-self._window:]


class RecentTPESampler(optuna.samplers.TPESampler):
    """TPE over the most recent `window` finished trials: its ask cost no longer grows with the study."""

    def __init__(self, *, window: int = TPE_WINDOW, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window = window

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return super().infer_relative_search_space(_RecentTrials(study, self.window), trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return super().sample_relative(_RecentTrials(study, self.window), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return super().sample_independent(_RecentTrials(study, self.window), trial, param_name, param_distribution)


def make_sampler(study: Study, asked_before: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler. A session that continues a study whose storage already holds `asked_before` trials seeds
    it with seed + asked_before: a sampler seeded as the first session was would draw that session's random
    candidates again (Optuna's samplers restart their generator), and train duplicates."""
    seed = study.seed + asked_before
    if study.mode == "ablation":
        return optuna.samplers.RandomSampler(seed=0)  # every candidate comes from the grid; nothing is sampled
    if study.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, study.n_trials // 4)))
    if study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if study.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return RecentTPESampler(seed=seed)


class TrialBook:
    """A study folder's Optuna study (SQLite, so optuna-dashboard can open it), written by the driver only, through
    Optuna's public ask-and-tell interface: `ask` hands out a trial, `tell` reports it by its handle (a trial this
    session asked) or by its number (one an earlier session asked and never told: a killed driver)."""

    def __init__(self, study: Study, storage_url: str, sampler: optuna.samplers.BaseSampler | None = None) -> None:
        self.objectives = dict(study.objectives)
        self.live: dict[int, optuna.trial.Trial] = {}  # the trials this session asked, by number, until told
        with quiet_optuna():
            self.study = optuna.create_study(
                study_name=study.name, storage=storage_url, sampler=sampler or make_sampler(study),
                load_if_exists=True,
                directions=["maximize" if d == "max" else "minimize" for d in study.objectives.values()],
            )
        # read once: which trials were handed out (with their configs) and which Optuna knows the end of; kept here
        # as this driver (the only writer) asks and tells
        self.known: dict[int, dict[str, Any] | None] = {}
        self.finished: set[int] = set()
        for trial in self.study.get_trials(deepcopy=False):
            raw = trial.user_attrs.get(CONFIG_ATTR)
            self.known[trial.number] = json.loads(raw) if isinstance(raw, str) else None
            if trial.state.is_finished():
                self.finished.add(trial.number)
        asked_before = len(self.known)
        if sampler is None and asked_before:
            self.study.sampler = make_sampler(study, asked_before)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(list(study.objectives))

    def asked(self) -> dict[int, dict[str, Any] | None]:
        """Every trial handed out: number -> the config it was given (None if it never got one)."""
        return dict(self.known)

    def ask(self) -> optuna.trial.Trial:
        with quiet_optuna():
            trial = self.study.ask()
        self.live[trial.number] = trial
        self.known[trial.number] = None
        return trial

    def annotate(self, trial: optuna.trial.Trial, task: TrialTask) -> dict[str, Any]:
        """Keep the trial's config and architecture on the Optuna trial; returns the config."""
        config = config_of(task)
        trial.set_user_attr(CONFIG_ATTR, json.dumps(config))
        self.known[trial.number] = json.loads(json.dumps(config))
        for name, value in task.spec.model_dump().items():
            trial.set_user_attr(name, value)
        for name in ("seed", "baseline", "factor", "level"):
            if config.get(name) is not None:
                value = config[name]
                trial.set_user_attr(name, value if isinstance(value, (int, float, str)) else str(value))
        return config

    def is_finished(self, number: int) -> bool:
        return number in self.finished

    def tell(self, number: int, row: Mapping[str, Any]) -> bool:
        """Tell Optuna what a trial's row says: its constraint values, then COMPLETE with the objectives, PRUNED
        (infeasible or stopped early: samplers learn from it, fronts never show it) or FAIL. False when Optuna
        already knew. A trial an earlier session asked is told by its number; Optuna's public interface gives no
        handle to attach its constraint values then (its row keeps them)."""
        if self.is_finished(number):
            self.live.pop(number, None)
            return False
        trial: optuna.trial.Trial | int = self.live.pop(number, number)
        if not isinstance(trial, int):
            known = trial.constraints
            for key, value in row.items():
                name = key.removeprefix("constraint_")
                if key.startswith("constraint_") and key != "constraint_violation" and _finite(value) \
                        and name not in known:
                    trial.set_constraint(name, float(value))
        values = [row.get(m) for m in self.objectives]
        with quiet_optuna():
            if row.get("status") == TrialStatus.COMPLETE and all(_finite(v) for v in values):
                self.study.tell(trial, [float(v) for v in values])
            else:
                pruned = row.get("status") in (TrialStatus.INFEASIBLE, TrialStatus.PRUNED)
                self.study.tell(trial, state=PRUNED if pruned else FAIL)
        self.finished.add(number)
        return True


class StudySearcher(Searcher):
    """Hands Tune this session's trials: trials to run again (by id), then the plan's new candidates, then sampled
    ones (define-by-run, `SearchSpace.sample` on the Optuna trial), and tells Optuna each outcome."""

    def __init__(self, study: Study, session: Session, storage_url: str,
                 timings_for: Callable[[ArchSpec], list[dict[str, Any]]],
                 resume_from: Callable[[str], str | None] = lambda trial_id: None) -> None:
        super().__init__()
        self.study, self.storage_url, self.timings_for = study, storage_url, timings_for
        self.resume_from = resume_from
        self.rerun, self.new, self.sampled = list(session.rerun), list(session.new), session.sampled
        self.numbers: dict[str, int] = {}
        self.rung_rows: dict[str, str] = {}  # the row a trial leaves if it is stopped at its last rung
        self._book: TrialBook | None = None

    @property
    def book(self) -> TrialBook:
        if self._book is None:
            self._book = TrialBook(self.study, self.storage_url)
        return self._book

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its searcher; the Optuna handle is reopened on use
        return {**self.__dict__, "_book": None}

    def save(self, checkpoint_path: str) -> None:
        """Tune saves searchers with its experiment; this one's state is the Optuna study itself (and each session
        plans its own trials), so it writes only what a reader would look for: the trial numbers it handed out."""
        with open(checkpoint_path, "w", encoding="utf-8") as fh:
            json.dump({"optuna_storage": self.storage_url, "trial_numbers": self.numbers}, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a resumed study plans a new session from its rows and its Optuna study."""

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.rerun:
            task = self.rerun.pop(0)
            config = config_of(task)
            checkpoint = self.resume_from(task.trial_id)
            if checkpoint is not None:  # a paused or interrupted trial of an earlier session: continue it
                config["resume_from"] = checkpoint
        elif self.new or self.sampled > 0:
            trial = self.book.ask()
            name = f"{trial.number:04d}"
            if self.new:
                task = self.new.pop(0).task(name, self.study)
            else:
                self.sampled -= 1
                spec = self.study.search_space().sample(trial)
                task = TrialTask(trial_id=name, spec=spec, seed=self.study.seed + trial.number)
            config = self.book.annotate(trial, task)
        else:
            return Searcher.FINISHED
        self.numbers[trial_id] = int(task.trial_id)
        return {**config, "timings": self.timings_for(task.spec)}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(result.get("rung_row"), str):
            self.rung_rows[trial_id] = result["rung_row"]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        number = self.numbers.get(trial_id)
        if number is None:
            return
        text = result.get("row") or result.get("rung_row") if result else None
        text = text if isinstance(text, str) else self.rung_rows.get(trial_id)
        failed: TrialRow = {"status": TrialStatus.FAILED}
        self.book.tell(number, row_from_json(text) if text is not None and not error else failed)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
