"""The only module that imports Ray and Optuna: it turns a `Study` into a Ray Tune run driven by an Optuna study.

    launch(study)
      -> study directory (frozen study.yaml; refuses to silently mix two different studies)
      -> Ray: a local instance (dashboard on 127.0.0.1) or an existing cluster (--address / RAY_ADDRESS)
      -> Optuna study in <dir>/optuna.db (SQLite, so optuna-dashboard can open it); baselines or the
         ablation grid are enqueued first, so they run exactly once
      -> Tune runs `trial.run_trial` per candidate with the study's resources and concurrency
      -> the Pareto front's non-exclusive timings are re-timed on an exclusively held device
      -> results.parquet

Resume uses Tune's own experiment restore (same trials, same Optuna study); trials whose row already exists
return it without running, so a killed driver loses nothing and repeats nothing.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import ray
import torch
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from ...errors import SrSearchError
from ...model.presets import PRESETS
from ...model.spec import ArchSpec
from ...results import store as results_mod
from ...results.pareto import pareto_front
from ...results.progress import progress_line, summarize, write_progress
from ...results.study_dir import StudyDir
from ...study.config import with_overrides
from ...study.model import Study
from ..trial import TrialTask, pick_device, retime, run_trial, task_columns

Echo = Callable[[str], None]
EXPERIMENT = "ray"  # Tune experiment folder inside the study directory (DESIGN 4.5)


# --- what to run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The trials of a study: `variants` for an ablation (fixed, in order), else `n` sampled candidates."""

    total: int
    variants: tuple[TrialTask, ...] = ()
    baselines: tuple[str, ...] = ()


def make_plan(study: Study) -> Plan:
    if study.mode == "ablation":
        variants = tuple(
            TrialTask(trial_id="", spec=item.spec, seed=seed, factor=item.factor, level=item.level)
            for item in study.ablation_grid()
            for seed in study.seeds
        )
        return Plan(total=len(variants), variants=variants)
    return Plan(total=study.n_trials, baselines=tuple(study.baselines))


class CandidateSpace:
    """Optuna's define-by-run space: an enqueued variant or baseline, else a sample of the search space.

    Returns Tune's config for the trial. Picklable and importable (Tune pickles it with the searcher).
    """

    def __init__(self, study: Study, plan: Plan) -> None:
        self.study = study
        self.plan = plan
        self.space = study.search_space() if study.mode == "search" else None

    def __call__(self, trial: Any) -> dict[str, Any]:
        attrs = trial.user_attrs
        trial_id = f"{trial.number:04d}"
        if "variant" in attrs:
            task = self.plan.variants[attrs["variant"]]
            return {"trial_id": trial_id, "arch": task.spec.to_json(), "seed": task.seed,
                    "factor": task.factor, "level": task.level}
        seed = self.study.seed + trial.number
        if "baseline" in attrs:
            spec = PRESETS[attrs["baseline"]]
            return {"trial_id": trial_id, "arch": spec.to_json(), "seed": seed, "baseline": attrs["baseline"]}
        spec = self.space.sample(trial)
        return {"trial_id": trial_id, "arch": spec.to_json(), "seed": seed}


class StudySearch(OptunaSearch):
    """OptunaSearch plus what Ray 2.60 lacks: Optuna 5 constraints, and honest states for trials that did not
    produce objective values (infeasible -> PRUNED with its constraint violations, failed -> FAIL)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # no pruning: intermediate values are reported to Tune (dashboard), not to Optuna

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        result = result or {}
        for key, value in result.items():
            if key.startswith("constraint_") and key != "constraint_violation" and value is not None:
                ot_trial.set_constraint(key.removeprefix("constraint_"), float(value))
        status = result.get("status")
        if status in ("infeasible", "failed") or error or status is None:
            state = optuna.trial.TrialState.PRUNED if status == "infeasible" else optuna.trial.TrialState.FAIL
            try:
                self._ot_study.tell(ot_trial, state=state)
            except RuntimeError as exc:  # already finished (e.g. by `reconcile_optuna` before a resume)
                warnings.warn(str(exc))
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


def _sampler(study: Study) -> optuna.samplers.BaseSampler:
    if study.mode == "ablation":
        return optuna.samplers.RandomSampler(seed=0)  # every trial is enqueued; the sampler never samples
    if study.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=study.seed, population_size=max(4, min(50, study.n_trials // 4)))
    if study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=study.seed)
    if study.sampler == "gp":
        return optuna.samplers.GPSampler(seed=study.seed)
    return optuna.samplers.TPESampler(seed=study.seed)


def storage_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'optuna.db').resolve()}"


def _new_searcher(study: Study, plan: Plan, study_dir: Path) -> StudySearch:
    metrics, modes = list(study.objectives), list(study.objectives.values())
    sampler = _sampler(study)
    storage = optuna.storages.RDBStorage(storage_url(study_dir))
    ot_study = optuna.create_study(
        study_name=study.name, storage=storage, sampler=sampler,
        directions=["maximize" if m == "max" else "minimize" for m in modes], load_if_exists=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ot_study.set_metric_names(metrics)  # so optuna-dashboard shows the objectives by name
    if not ot_study.trials:  # a fresh study: baselines or the grid first, each exactly once
        for i in range(len(plan.variants)):
            ot_study.enqueue_trial({}, user_attrs={"variant": i})
        for name in plan.baselines:
            ot_study.enqueue_trial({}, user_attrs={"baseline": name})
    return StudySearch(CandidateSpace(study, plan), metric=metrics, mode=modes, sampler=sampler,
                       study_name=study.name, storage=storage)


# --- the trial, on a Ray worker ---------------------------------------------------------------------


def _trainable(config: dict[str, Any], study: Study, study_dir: str, exclusive: bool) -> None:
    torch.set_num_threads(max(1, int(study.resources.cpus_per_trial)))
    row = run_trial(task_of(config), study, Path(study_dir), device=pick_device(study.resources.gpus_per_trial),
                    exclusive_timing=exclusive, report=tune.report)
    tune.report(final_metrics(row))


def task_of(config: dict[str, Any]) -> TrialTask:
    """The trial a Tune config (as built by `CandidateSpace`) stands for."""
    return TrialTask(trial_id=config["trial_id"], spec=ArchSpec.from_json(config["arch"]), seed=config["seed"],
                     baseline=config.get("baseline"), factor=config.get("factor"), level=config.get("level"))


def trial_dirname(trial: Any) -> str:
    """Tune's folder for a trial, named by our trial id (Tune's default name embeds the whole config)."""
    return f"trial_{trial.config.get('trial_id', trial.trial_id)}"


def final_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """What Tune (and through it Optuna) sees of a finished row: numbers, the status and the reason."""
    out = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
    out.update(status=row["status"], error=row.get("error") or "", trial_id=row["trial_id"])
    return out


def _exclusive_timing(study: Study) -> bool:
    """A timing is exclusive only when nothing else can run on the device at the same time (DESIGN 6)."""
    gpus = study.resources.gpus_per_trial
    if gpus > 0:
        return gpus >= 1
    return study.resources.concurrency == 1


# --- progress ---------------------------------------------------------------------------------------


class StudyProgress(tune.Callback):
    """Live progress line + `progress.json` for `sr-search status`; rows for trials that crashed."""

    def __init__(self, study: Study, study_dir: Path, total: int, dashboard: str | None, echo: Echo,
                 every_s: float = 5.0, heartbeat_s: float = 60.0) -> None:
        self.study, self.study_dir, self.total = study, study_dir, total
        self.dashboard, self.echo, self.every_s, self.heartbeat_s = dashboard, echo, every_s, heartbeat_s
        self.setup()

    def setup(self, **info: Any) -> None:
        """Called by Tune at every (re)start: ETA counts only this session's trials."""
        self.started = time.time()
        self.done_before = len(results_mod.load_results(self.study_dir))
        self.last_write = self.last_print = 0.0
        self.last_counts: tuple[int, int] | None = None
        self.running = 0
        self.summary: dict[str, Any] | None = None

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        config = trial.config
        if "trial_id" not in config or results_mod.read_trial_row(self.study_dir, config["trial_id"]):
            return
        reason = "trial crashed"
        if trial.error_file and Path(trial.error_file).exists():
            lines = Path(trial.error_file).read_text().strip().splitlines()
            reason = f"trial crashed: {lines[-1] if lines else 'no message'}"
        results_mod.write_trial_row(self.study_dir, {
            **task_columns(task_of(config), self.study.name), "status": "failed", "error": reason,
        })
        self._write(force=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trials, force=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._write(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._write(trials, force=True, final=True)

    def _write(self, trials: list | None = None, force: bool = False, final: bool = False) -> None:
        now = time.time()
        if not force and now - self.last_write < self.every_s:
            return
        self.last_write = now
        if trials is not None:
            self.running = sum(t.status == "RUNNING" for t in trials)
        if force or self.summary is None:  # rows change only when a trial ends: re-read them only then
            self.summary = summarize(self.study_dir, self.study.objectives, self.total)
        state = dict(self.summary)
        phase = ("finished" if state["finished"] >= self.total else "stopped") if final else "running"
        state.update(running=0 if final else self.running, elapsed_s=round(now - self.started, 1),
                     dashboard=self.dashboard, updated_at=now, state=phase)
        finished_here = state["finished"] - self.done_before
        remaining = self.total - state["finished"]
        state["eta_s"] = round((now - self.started) / finished_here * remaining, 1) if finished_here > 0 else None
        write_progress(self.study_dir, state)
        line = progress_line(state)
        changed = (state["finished"], state["running"]) != self.last_counts
        if changed or now - self.last_print >= self.heartbeat_s:  # a line per change, else one a minute
            self.echo(line)
            self.last_print, self.last_counts = now, (state["finished"], state["running"])


# --- launch -----------------------------------------------------------------------------------------


def _init_ray(address: str | None, dashboard_host: str, echo: Echo) -> str | None:
    """Join `address` (or RAY_ADDRESS) or start a local instance; returns the dashboard URL if any."""
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return None
    quiet = dict(configure_logging=True, logging_level="WARNING", log_to_driver=False)
    if address:
        import sr_search

        # Ship this package's code to the cluster's workers (its dependencies must be installed there).
        ctx = ray.init(address=address, runtime_env={"py_modules": [os.path.dirname(sr_search.__file__)]}, **quiet)
    else:
        ctx = ray.init(address="local", include_dashboard=None, dashboard_host=dashboard_host, **quiet)
    url = getattr(ctx, "dashboard_url", None)
    if url:
        url = url if url.startswith("http") else f"http://{url}"
        echo(f"Ray dashboard: {url}")
    return url


def study_directory(study: Study, out_dir: str | Path | None) -> Path:
    return Path(out_dir) if out_dir is not None else study.out_dir


def launch(
    study: Study,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    address: str | None = None,
    n_trials: int | None = None,
    dry_run: bool = False,
    dashboard_host: str = "127.0.0.1",
    study_file: str | Path | None = None,
    echo: Echo = print,
) -> Path:
    """Run (or resume) `study`; returns its directory, which holds results.parquet."""
    if n_trials is not None:
        study = with_overrides(study, n_trials=n_trials)
    study_dir = study_directory(study, out_dir).resolve()
    plan = make_plan(study)
    _check_devices(study)
    if dry_run:
        echo(describe_plan(study, plan, study_dir))
        return study_dir

    if _already_finished(study, plan, study_dir, resume, echo):
        return study_dir
    _freeze_study(study, study_dir, check=resume)

    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0 on restore too
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    own_ray = not ray.is_initialized()
    dashboard = _init_ray(address, dashboard_host, echo)
    echo(f"Study {study.name!r}: {plan.total} trials -> {study_dir}")
    echo(f"Optuna storage (watch it with optuna-dashboard): {storage_url(study_dir)}")
    try:
        _tuner(study, plan, study_dir, resume, StudyProgress(study, study_dir, plan.total, dashboard, echo)).fit()
        _retime_front(study, study_dir, echo)
        reconcile_optuna(study, study_dir, finished=len(results_mod.load_results(study_dir)) >= plan.total)
    finally:
        results_mod.consolidate(study_dir)
        if own_ray:
            ray.shutdown()
    done = len(results_mod.load_results(study_dir))
    if done < plan.total:
        echo(f"Stopped with {done}/{plan.total} trials; continue with: "
             f"sr-search launch {study_file or '<study.yaml>'} --resume --out {study_dir}")
    else:
        echo(f"Done: {done} trials. Results: {study_dir / 'results.parquet'}; report: sr-search report {study_dir}")
    return study_dir


def reconcile_optuna(study: Study, study_dir: Path, *, finished: bool) -> int:
    """Make the Optuna study agree with the rows, which are the source of truth.

    A driver killed between Optuna's ask and Tune's next experiment checkpoint leaves Optuna trials RUNNING that
    the restored searcher no longer knows. Each one with a row is told its outcome; once the study is finished,
    one without a row was never run and is marked FAIL. Returns how many trials were told.
    """
    running = optuna.trial.TrialState.RUNNING
    ot_study = optuna.load_study(study_name=study.name, storage=storage_url(study_dir))
    rows = {row["trial_id"]: row for row in results_mod.load_results(study_dir).to_dict("records")}
    told = 0
    for frozen in ot_study.get_trials(deepcopy=False, states=(running,)):
        row = rows.get(f"{frozen.number:04d}")
        if row is None and not finished:
            continue  # Tune may still resume it
        trial = optuna.trial.Trial(ot_study, frozen._trial_id)
        status = row["status"] if row else "failed"
        for key, value in (row or {}).items():
            if key.startswith("constraint_") and key != "constraint_violation" and value is not None and value == value:
                trial.set_constraint(key.removeprefix("constraint_"), float(value))
        if status == "complete":
            ot_study.tell(trial, [float(row[m]) for m in study.objectives])
        else:
            ot_study.tell(trial, state=optuna.trial.TrialState.PRUNED if status == "infeasible"
                          else optuna.trial.TrialState.FAIL)
        told += 1
    return told


def _check_devices(study: Study) -> None:
    """A CUDA timing protocol needs trials that hold a GPU; say so before anything starts."""
    protocol = study.protocol
    if protocol.device == "cuda" and study.resources.gpus_per_trial == 0:
        raise SrSearchError(
            f"study {study.name!r}: timing protocol {protocol.name!r} times on CUDA, but trials get no GPU "
            f"(resources.gpus_per_trial is 0{'' if torch.cuda.is_available() else '; this machine has no CUDA'}). "
            f"Set resources.gpus_per_trial (1 for exclusive timings) or use timing: cpu"
        )


def _already_finished(study: Study, plan: Plan, study_dir: Path, resume: bool, echo: Echo) -> bool:
    """True (and says so) for a finished study; refuses to mix a new run into an unfinished one."""
    started = tune.Tuner.can_restore(str(study_dir / EXPERIMENT)) if (study_dir / EXPERIMENT).exists() else False
    finished = len(results_mod.load_results(study_dir)) if study_dir.is_dir() else 0
    if started and finished >= plan.total:
        echo(f"Study {study.name!r} already finished: {finished} trials in {study_dir}.")
        return True
    if started and not resume:
        raise SrSearchError(f"{study_dir} already holds study {study.name!r} ({finished}/{plan.total} trials); "
                            f"pass --resume to continue it or --out to start another")
    if resume and not started:
        raise SrSearchError(f"nothing to resume in {study_dir}: no Tune experiment there yet (drop --resume)")
    return False


def _tuner(study: Study, plan: Plan, study_dir: Path, resume: bool, progress: StudyProgress) -> tune.Tuner:
    """A new Tune experiment in <dir>/ray driven by the Optuna study, or the interrupted one, restored."""
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, study=study, study_dir=str(study_dir), exclusive=_exclusive_timing(study)),
        {"cpu": study.resources.cpus_per_trial, "gpu": study.resources.gpus_per_trial},
    )
    if resume:  # Tune restores its trials, the searcher (Optuna) state and our callback
        return tune.Tuner.restore(str(study_dir / EXPERIMENT), trainable, resume_unfinished=True,
                                  resume_errored=False)
    run_config = tune.RunConfig(
        name=EXPERIMENT, storage_path=str(study_dir), verbose=0, callbacks=[progress], log_to_file=True,
        failure_config=tune.FailureConfig(max_failures=study.resources.max_failures),
    )
    tune_config = tune.TuneConfig(
        search_alg=_new_searcher(study, plan, study_dir), num_samples=plan.total,
        max_concurrent_trials=study.resources.concurrency, trial_dirname_creator=trial_dirname, reuse_actors=True,
    )
    return tune.Tuner(trainable, run_config=run_config, tune_config=tune_config)


def _freeze_study(study: Study, study_dir: Path, check: bool) -> None:
    """Keep the resolved study next to its results; a resumed study must be the same study."""
    study_dir.mkdir(parents=True, exist_ok=True)
    frozen = study_dir / "study.yaml"
    text = study.to_yaml()
    if check and frozen.exists() and frozen.read_text() != text:
        raise SrSearchError(f"{frozen} differs from the study being resumed; a study cannot change mid-way "
                            f"(start a new one with --out)")
    frozen.write_text(text)


def _retime_front(study: Study, study_dir: Path, echo: Echo) -> None:
    """Re-time the front's non-exclusive timings on an exclusively held device (a Ray task that asks for the
    whole GPU, or for the CPUs once no trial runs)."""
    df = results_mod.load_results(study_dir)
    if not len(df) or "timing_exclusive" not in df:
        return
    front = pareto_front(df, study.objectives)
    stale = front[front["timing_exclusive"] == False]  # noqa: E712 - pandas element-wise comparison
    if not len(stale):
        return
    gpu = study.resources.gpus_per_trial > 0
    echo(f"Re-timing {len(stale)} front member(s) exclusively...")
    task = ray.remote(num_cpus=max(1, int(study.resources.cpus_per_trial)), num_gpus=1 if gpu else 0)(retime)
    ray.get(task.remote(study, str(study_dir), list(stale["trial_id"]), "cuda" if gpu else "cpu"))


def describe_plan(study: Study, plan: Plan, study_dir: Path) -> str:
    lines = [f"study {study.name!r} ({study.mode}) -> {study_dir}", f"trials: {plan.total}"]
    for task in plan.variants[:50]:
        lines.append(f"  {task.factor or 'base'}={task.level!s:10s} seed={task.seed}  {task.spec.to_json()}")
    if plan.baselines:
        lines.append(f"baselines first: {', '.join(plan.baselines)}")
    r = study.resources
    lines.append(f"resources per trial: {r.cpus_per_trial} CPU, {r.gpus_per_trial} GPU; concurrency {r.concurrency}")
    return "\n".join(lines)
