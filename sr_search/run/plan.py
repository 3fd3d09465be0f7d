"""What a study asks for, and what one session of it still has to run (Ray- and Optuna-free, so it is testable
on its own and readable by `--dry-run`).

A study asks for `PlannedTrial`s: an ablation's grid points once per seed, or a search's baselines followed by
sampled candidates. A session (one `launch`, fresh or resumed) compares the plan with the rows already written and
with the trials the Optuna study knows:

- a trial with a row is done; rows are the truth;
- a trial the Optuna study asked for but that has no row (a killed driver, a corrupt row moved aside) runs again
  under its own id, with the candidate it was given (its `config`, kept in the Optuna trial);
- planned candidates that are neither run next, in order; a search samples the rest.

So a grown study (more trials, seeds or levels) runs only what is new, and a resumed one only what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model.presets import PRESETS
from ..model.spec import ArchSpec
from ..study.model import Study
from .trial import TrialTask


@dataclass(frozen=True)
class PlannedTrial:
    """One candidate a study asks for, before it has a trial id (`spec` None: sampled by the searcher)."""

    spec: ArchSpec | None
    seed: int | None = None  # None: the study seed plus the trial number (a search's candidates)
    baseline: str | None = None
    factor: str | None = None
    level: Any = None
    #: a confirmation's candidate: the source trial it trains again, and the weights it continues from (if any)
    source_trial: str | None = None
    warm_start: str | None = None
    warm_iterations: int | None = None

    def identity(self) -> tuple[Any, ...] | None:
        """What makes two trials the same candidate (None for a sampled one, which is never matched)."""
        if self.spec is None:
            return None
        return (self.spec.arch_key(), self.seed, self.baseline)

    def task(self, trial_id: str, study: Study) -> TrialTask:
        seed = self.seed if self.seed is not None else study.seed + int(trial_id)
        assert self.spec is not None
        return TrialTask(trial_id=trial_id, spec=self.spec, seed=seed, baseline=self.baseline, factor=self.factor,
                         level=self.level, source_trial=self.source_trial, warm_start=self.warm_start,
                         warm_iterations=self.warm_iterations)


def make_plan(study: Study) -> list[PlannedTrial]:
    """Every trial the study asks for, in the order they run: the grid (each point once per seed; the base once per
    seed of `base_seed_list`, its extra seeds new trials) or the baselines then one sampled candidate per remaining
    trial. A confirmation (`confirms:`) asks for its candidates, each once per seed."""
    if study.confirms is not None:
        return [PlannedTrial(c.spec(), seed, baseline=c.baseline, source_trial=c.trial, warm_start=c.warm_start,
                             warm_iterations=c.warm_iterations)
                for c in study.candidates for seed in c.seeds]
    if study.mode == "ablation":
        return [PlannedTrial(point.spec, seed, factor=point.factor, level=point.level)
                for point in study.ablation_grid()
                for seed in (study.base_seed_list() if point.factor == "base" else study.seeds)]
    baselines = [PlannedTrial(PRESETS[name], None, baseline=name) for name in study.baselines]
    return baselines + [PlannedTrial(None)] * max(0, study.n_trials - len(baselines))


def config_of(task: TrialTask) -> dict[str, Any]:
    """The Tune config of a trial (what the Optuna trial keeps, so a lost trial can run again as itself)."""
    config = {"trial_id": task.trial_id, "arch": task.spec.to_json(), "seed": task.seed, "baseline": task.baseline,
              "factor": task.factor, "level": task.level}
    if task.source_trial is not None:  # a confirmation's candidate
        config.update(source_trial=task.source_trial, warm_start=task.warm_start,
                      warm_iterations=task.warm_iterations)
    return config


def task_of(config: Mapping[str, Any]) -> TrialTask:
    """The trial a config stands for."""
    return TrialTask(trial_id=config["trial_id"], spec=ArchSpec.from_json(config["arch"]), seed=config["seed"],
                     baseline=config.get("baseline"), factor=config.get("factor"), level=config.get("level"),
                     source_trial=config.get("source_trial"), warm_start=config.get("warm_start"),
                     warm_iterations=config.get("warm_iterations"))


@dataclass
class Session:
    """What one launch runs: `rerun` (known trials without a row, by id), `new` (planned candidates not yet asked
    for) and `sampled` (how many candidates the searcher samples)."""

    total: int
    done: list[str]
    rerun: list[TrialTask] = field(default_factory=list)
    new: list[PlannedTrial] = field(default_factory=list)
    sampled: int = 0

    @property
    def to_run(self) -> int:
        return len(self.rerun) + len(self.new) + self.sampled


def plan_session(study: Study, rows: Iterable[Mapping[str, Any]],
                 asked: Mapping[int, Mapping[str, Any] | None]) -> Session:
    """This session's work, from the plan, the rows written so far and the trials Optuna has handed out
    (`asked`: trial number -> its config, None when it never got one)."""
    rows = list(rows)
    done = {row["trial_id"] for row in rows}
    known = {_identity(row) for row in rows}
    rerun = []
    for number, config in sorted(asked.items()):
        trial_id = f"{number:04d}"
        if trial_id in done or config is None:
            continue
        task = task_of(config)
        rerun.append(task)
        known.add((task.spec.arch_key(), task.seed, task.baseline))
    plan = make_plan(study)
    if study.mode == "ablation" or study.confirms is not None:  # a fixed list: each candidate once
        new = [p for p in plan if _planned_identity(p) not in known]
        sampled = 0
    else:
        new = [p for p in plan if p.baseline is not None and _baseline_missing(p, known)]
        used = len(done) + len(rerun) + len(new)
        sampled = max(0, study.n_trials - used)
    total = len(done) + len(rerun) + len(new) + sampled
    return Session(total=total, done=sorted(done), rerun=rerun, new=new, sampled=sampled)


def _identity(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row's candidate (its spec recomputed from arch_json, so rows written before a key changed still match)."""
    spec = ArchSpec.from_json(row["arch_json"])
    baseline = row.get("baseline")
    return (spec.arch_key(), row.get("seed"), baseline if isinstance(baseline, str) else None)


def _planned_identity(p: PlannedTrial) -> tuple[Any, ...] | None:
    return p.identity()


def _baseline_missing(p: PlannedTrial, known: set[tuple[Any, ...]]) -> bool:
    """True when baseline `p` has not run yet (a baseline's seed depends on its trial number, so match by name)."""
    assert p.spec is not None
    return not any(k[0] == p.spec.arch_key() and k[2] == p.baseline for k in known)
