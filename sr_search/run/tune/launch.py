"""`launch(study)`: a study folder, Ray, an Optuna study and a Tune run, as docs/architecture.md
("How a study flows") tells it.

    launch(study)
      -> resources checked; the study folder held by this driver (a lock); the study frozen, or on resume compared
         with what was frozen (a study may grow, never change what its trials mean)
      -> Ray: a local instance (dashboard on 127.0.0.1, token auth on) or an existing cluster (--address)
      -> this session's work: trials without a row run again under their own id, then the plan's new candidates,
         then sampled ones (Optuna, SQLite in the study folder)
      -> Tune runs them (`trainable.train_trial` on workers); `StudyRecorder` writes each row as it arrives
      -> the front's non-exclusive timings are confirmed on an exclusively held device
      -> results.parquet

Every session is a new Tune experiment (`<storage>/ray/session-NNN`); nothing is restored from Tune's pickles, so a
study folder holds no code to trust: rows (parquet), the Optuna study (SQLite), YAML and weights (loaded with
`weights_only`). A stopped study raises `StudyStopped` (exit 130) after saving everything that finished.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from ...errors import SrSearchError, StudyStopped
from ...model.spec import ArchSpec
from ...results.pareto import pareto_front
from ...results.progress import ProgressState, failure_lines, progress_line, running_lines
from ...results.store import consolidate, load_results, read_trial_row, write_trial_row
from ...results.study_dir import TUNE_NAME, StudyDir, atomic_write
from ...study.config import with_overrides
from ...study.identity import check_resumable, resolved_yaml
from ...study.model import Study
from ..plan import Session, plan_session
from ..resources import check_resources, check_timing_device, local_resources
from ..signals import sigterm_as_ctrl_c
from ..timing.cache import TimingCache
from ..timing.result import Timing
from ..trial import retimed_row
from .cluster import init_ray, wait_for_resources
from .halving import ParetoHalving, RungLedger
from .recorder import StudyRecorder
from .searcher import StudySearcher, TrialBook
from .trainable import timing_task, train_trial

Echo = Callable[[str], None]


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
    allow_block_change: bool = False,
) -> Path:
    """Run (or resume, or grow) `study`; returns its folder, which holds results.parquet.

    Raises `SrSearchError` for a study that cannot run as asked (exit 1 in the CLI) and `StudyStopped` when it
    stopped early (Ctrl-C): everything that finished is kept, and `--resume` runs the rest.
    """
    if n_trials is not None:
        study = with_overrides(study, n_trials=n_trials)
    folder = StudyDir(Path(out_dir) if out_dir is not None else study.out_dir)
    if folder.root.exists() and not folder.root.is_dir():
        raise SrSearchError(f"--out {folder.root} is a file, not a folder: name a folder for the study")
    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    check_timing_device(study)  # on a cluster too, before the study folder or Ray is touched
    if not joining:
        check_resources(study, local_resources())
    if dry_run:
        rows = load_results(folder).to_dict("records") if folder.exists() else []
        echo(describe_session(study, plan_session(study, rows, asked={}), folder))
        return folder.root

    if resume and not folder.study_file.exists():
        raise SrSearchError(f"nothing to resume in {folder.root}: no study was started there (drop --resume)")
    with folder.owned(), sigterm_as_ctrl_c() as on_sigterm:  # a scheduler's SIGTERM stops it as Ctrl-C does
        started = folder.study_file.exists()
        resolved, block_changes = None, []
        if started:
            resolved = folder.resolved.read_text() if folder.resolved.exists() else None
            block_changes = check_resumable(folder.study_file.read_text(), resolved, study, folder.root,
                                            allow_block_change=allow_block_change)
            for line in block_changes:
                echo(f"Resuming with a changed block module (--allow-block-change; resolved.yaml notes it when "
                     f"trials run): {line}")
        rows = load_results(folder)
        book = TrialBook(study, folder.storage_url)
        _tell_known_rows(book, rows)
        session = plan_session(study, rows.to_dict("records"), book.asked())
        if session.to_run == 0:
            echo(f"Study {study.name!r} already finished: {len(rows)} trials in {folder.root}.")
            consolidate(folder)
            return folder.root
        if started and not resume:
            raise SrSearchError(f"{folder.root} already holds study {study.name!r} ({len(rows)}/{session.total} "
                                f"trials); pass --resume to continue it, or --out to start another")
        own_ray = not ray.is_initialized()
        dashboard = init_ray(address, dashboard_host, echo)
        on_sigterm.arm()  # ray.init put its own SIGTERM handler (sys.exit) in place of ours
        try:
            wait_for_resources(study, echo, joined=joining)
            # frozen once the study can run: a study refused for the cluster's resources leaves no started folder
            text, resolved_text = study.to_yaml(), resolved_yaml(study, resolved, block_changes)
            atomic_write(folder.study_file, lambda tmp: tmp.write_text(text))
            atomic_write(folder.resolved, lambda tmp: tmp.write_text(resolved_text))
            echo(f"Study {study.name!r}: {session.to_run} of {session.total} trials to run -> {folder.root}")
            echo(f"Optuna storage (watch it with optuna-dashboard): {folder.storage_url}")
            _run_session(study, session, folder, dashboard, echo)
            _retime_front(study, folder, echo)
        finally:
            consolidate(folder)
            if own_ray:
                ray.shutdown()
    final = load_results(folder)
    for line in failure_lines(final):  # the reasons, not only a count (the exit code stays 0: the study ran)
        echo(line)
    done = len(final)
    if done < session.total:
        hint = f"sr-search launch {study_file or '<study.yaml>'} --resume --out {folder.root}"
        raise StudyStopped(folder.root, done, session.total, hint)
    echo(f"Done: {done} trials. Results: {folder.results}; report: sr-search report {folder.root}")
    return folder.root


def _tell_known_rows(book: TrialBook, rows: Any) -> None:
    """Rows are the truth: tell Optuna every row it does not know yet (a driver killed between the two writes)."""
    asked = book.asked()
    for row in rows.to_dict("records"):
        number = int(row["trial_id"])
        if number in asked and not book.is_finished(number):
            book.tell(number, row)


#: Tune's settings for a session (where the user set none): trials report rows, not one metric; short trials are normal
TUNE_ENV = {"TUNE_DISABLE_STRICT_METRIC_CHECKING": "1", "RAY_AIR_NEW_OUTPUT": "0",
            "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@contextlib.contextmanager
def scoped_env(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in the environment (each where it is not set already) for the block only: a program that imports
    sr-search and calls `launch` keeps its environment as it was."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@scoped_env(TUNE_ENV)
def _run_session(study: Study, session: Session, folder: StudyDir, dashboard: str | None, echo: Echo) -> None:
    cache = TimingCache(folder.timing_cache)
    storage = study.storage or str(folder.root.resolve())
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, study=study, exclusive=exclusive_timing(study),
                             timing_on=study.timing_on.resources if study.timing_on else None),
        {"cpu": study.resources.cpus_per_trial, "gpu": study.resources.gpus_per_trial},
    )
    ledger = RungLedger(folder) if study.pruning is not None else None
    recorder = StudyRecorder(study, folder, cache, session.total, dashboard, show=LinePrinter(echo), ledger=ledger)
    searcher = StudySearcher(study, session, folder.storage_url,
                             timings_for=lambda spec: [e for p in (study.protocol, *study.also_protocols())
                                                       for e in cache.entries(spec.deploy_key(), p)],
                             resume_from=ledger.latest_checkpoint if ledger is not None else lambda trial_id: None)
    concurrency: dict[str, Any] = {"max_concurrent_trials": study.resources.concurrency}
    if study.pruning is not None:  # the scheduler caps running trials itself: a paused trial must not hold a slot
        concurrency = {"scheduler": ParetoHalving(ledger, list(study.objectives.values()),
                                                  study.pruning.reduction_factor, study.resources.concurrency,
                                                  expected=session.to_run)}
    tuner = tune.Tuner(
        trainable,
        run_config=tune.RunConfig(
            name=_session_name(storage), storage_path=_join(storage, TUNE_NAME), verbose=0, callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=study.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=session.to_run, trial_name_creator=trial_name,
            trial_dirname_creator=trial_name, reuse_actors=True, **concurrency,
        ),
    )
    tuner.fit()


def trial_name(trial: Any) -> str:
    """Tune's name (dashboard) and folder for a trial: our trial id (Tune's default embeds the whole config)."""
    return f"trial_{trial.config.get('trial_id', trial.trial_id)}"


def exclusive_timing(study: Study) -> bool:
    """A timing is exclusive only when nothing else can run on the device at the same time (docs/architecture.md,
    "Timing")."""
    if study.timing_on is not None:
        return True  # a Ray task that holds the deployment device alone
    gpus = study.resources.gpus_per_trial
    if gpus > 0:
        return gpus >= 1
    return study.resources.concurrency == 1


def _retime_front(study: Study, folder: StudyDir, echo: Echo) -> None:
    """Re-time the front's non-exclusive timings on an exclusively held device (a Ray task that holds the deployment
    device, the whole GPU, or the CPUs once no trial runs), one measurement per deployed network."""
    df = load_results(folder)
    if not len(df) or "timing_exclusive" not in df:
        return
    front = pareto_front(df, study.objectives)
    stale = front[front["timing_exclusive"] == False]  # noqa: E712 - pandas element-wise comparison
    if not len(stale):
        return
    echo(f"Re-timing {len(stale)} front member(s) exclusively...")
    cache = TimingCache(folder.timing_cache)
    task = timing_task(study, study.timing_on.resources if study.timing_on else None, "re-time the front")
    fresh: dict[str, Timing] = {}
    for trial_id in stale["trial_id"]:
        row = read_trial_row(folder, trial_id)
        if row is None:
            continue
        spec = ArchSpec.from_json(row["arch_json"])
        key = spec.deploy_key()
        if key not in fresh:
            text, _ = ray.get(task.remote(study, spec.to_json(), [], True))
            fresh[key] = Timing.model_validate_json(text)
            cache.put(key, study.protocol, fresh[key], replace=True)
        write_trial_row(folder, retimed_row(row, fresh[key], study))
    cache.flush()  # the parquet file alone is the whole cache once a launch ends


def describe_session(study: Study, session: Session, folder: StudyDir) -> str:
    """What `--dry-run` prints: the trials this launch would run, and the resources each gets."""
    lines = [f"study {study.name!r} ({study.mode}) -> {folder.root}",
             f"trials: {session.total} ({len(session.done)} done, {session.to_run} to run)"]
    for planned in session.new[:50]:
        what = "base" if planned.factor == "base" else (
            f"{planned.factor}={planned.level}" if planned.factor else f"baseline {planned.baseline}")
        if planned.source_trial is not None:  # a confirmation's candidate
            what = f"confirms {planned.source_trial}" + (f" ({planned.baseline})" if planned.baseline else "")
        seed = "" if planned.seed is None else f" seed={planned.seed}"
        lines.append(f"  {what:28s}{seed}  {planned.spec.to_json() if planned.spec else ''}")
    if session.sampled:
        lines.append(f"  + {session.sampled} candidates sampled by {study.sampler}")
    if study.pruning is not None:
        rungs = study.pruning.rungs(study.train.iterations)
        lines.append(f"pruning: successive halving, rungs at {', '.join(map(str, rungs))} iterations, the top "
                     f"1/{study.pruning.reduction_factor} continue at each")
    r = study.resources
    lines.append(f"resources per trial: {r.cpus_per_trial:g} CPU, {r.gpus_per_trial:g} GPU; concurrency "
                 f"{r.concurrency}; timing: {study.protocol.name}"
                 + (f" on {dict(study.timing_on.resources)}" if study.timing_on else ""))
    return "\n".join(lines)


class LinePrinter:
    """Progress as plain lines (a log file reads them as well as a terminal): the counts and the running trials,
    printed when they change, else once a minute."""

    def __init__(self, echo: Echo, heartbeat_s: float = 60.0) -> None:
        self.echo, self.heartbeat_s = echo, heartbeat_s
        self.last: tuple[Any, ...] | None = None
        self.last_time = 0.0
        self.reasons: set[str] = set()

    def __call__(self, state: ProgressState) -> None:
        import time

        snapshot = state.latest()  # the recorder's own snapshot of this update: one per update, not two
        failure = snapshot.get("last_failure") or {}
        reason = " ".join(str(failure.get("error") or "").split())
        kind = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", reason)  # 0.037 and 0.041: one kind of reason
        if reason and kind not in self.reasons:  # one line per new reason
            self.reasons.add(kind)
            self.echo(f"  failed {failure.get('trial_id')} {failure.get('block') or ''}: {reason[:400]}")
        key = (snapshot["finished"], snapshot["running"], snapshot["state"],
               tuple((t["trial_id"], t["iteration"]) for t in snapshot["running_trials"]))
        now = time.time()
        if key == self.last and now - self.last_time < self.heartbeat_s:
            return
        self.last, self.last_time = key, now
        self.echo("\n".join([progress_line(snapshot), *running_lines(snapshot)]))


def _session_name(storage: str) -> str:
    """A new Tune experiment per session: session-001, session-002, ..."""
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(storage) if "://" in storage else (pafs.LocalFileSystem(), storage)
    root = _join(path, TUNE_NAME)
    info = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    used = [i.base_name for i in info if i.base_name.startswith("session-")]
    return f"session-{len(used) + 1:03d}"


def _join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"
