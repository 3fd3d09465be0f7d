"""One trial, start to finish, without Ray, Optuna or any file of the study (the runner runs it on a worker and the
driver writes what it returns; the benchmarks call it in a loop).

    cheap checks (params, MACs, LR patch) -> time the deployed network (cached by deploy_key) -> budgets
      -> an infeasible candidate stops here, untrained
    -> the untrained network (random BN statistics) deployed and compared: a broken fusion fails here, untrained
    -> train -> reparameterize -> equivalence check -> evaluate the deployed network -> one row

Cost is known before quality (docs/architecture.md, "Decisions the code builds on"): the deployed network's shapes
decide its params, MACs and latency, so they are measured before any training. Every outcome is one row; a failure in
one stage is the row's `error`, never an exception that loses the trial.
"""

from __future__ import annotations

import json
import math
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import torch

from ..columns import TimedColumns, TrialRow, TrialStatus, is_quality
from ..errors import SrSearchError
from ..model.blocks import family_source
from ..model.deploy import check_equivalence, check_untrained, reparameterize
from ..model.network import build
from ..model.spec import ArchSpec
from ..model.testing import randomize_statistics
from ..results.quality_flags import row_flags
from ..results.store import spec_columns
from ..study.model import Study
from ..study.protocols import TimingProtocol
from ..study.settings import DataSpec
from ..model.cost import deploy_pair
from . import data as data_mod
from . import metrics, train
from .challenge import ESR, fvcore_gflops, score_columns
from .quality_check import output_spread
from .timing.cache import TimingCache
from .timing.engine import EngineError
from .timing.measure import protocol_cost, time_spec
from .timing.result import Timing

#: Deployed and trained models must agree to fp32 rounding (docs/architecture.md, "Deployment").
EQUIVALENCE_TOLERANCE = 1e-4

Report = Callable[[dict[str, Any]], None]
#: (spec, protocol=None) -> (timing, whether it came from the cache); where and how the deployed network is timed
#: (protocol: the study's `timing` when None, else one of its `also_time` protocols)
Timer = Callable[..., tuple[Timing, bool]]


@dataclass(frozen=True)
class TrialTask:
    """What one trial needs; small and picklable so Ray can ship it."""

    trial_id: str
    spec: ArchSpec
    seed: int
    baseline: str | None = None
    factor: str | None = None
    level: Any = None
    #: a confirmation's candidate: its source trial, and the source's kept weights it continues from (if any)
    source_trial: str | None = None
    warm_start: str | None = None
    warm_iterations: int | None = None


@dataclass(frozen=True)
class Rungs:
    """Where a trial reports its quality so far (successive halving) and what it was resumed from.

    `on_rung(index, rung_row, state)` gets the rung's index, the row the trial would leave if stopped there
    (status 'pruned', rung metrics in `rung_*` columns) and a function that returns the trainer's state to
    checkpoint. The caller decides there whether training goes on: it may never return (the trial is stopped).
    `resume` is a state saved at a rung (`{"rung", "row", "trainer"}`): training continues from it exactly.
    """

    budgets: tuple[int, ...]
    on_rung: Callable[[int, dict[str, Any], Callable[[], dict[str, Any]]], None]
    resume: dict[str, Any] | None = None


@dataclass
class TrialOutcome:
    """What a trial hands back to whoever records it: its row, a timing it measured (for the cache) and, when the
    study keeps checkpoints, the trained weights."""

    row: TrialRow
    timing: Timing | None = None
    weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def task_columns(task: TrialTask, study_name: str) -> TrialRow:
    """The columns a trial's row has whatever happens to it: who it is and what it was asked to run."""
    columns = {
        "study": study_name, "trial_id": task.trial_id, **spec_columns(task.spec), "baseline": task.baseline,
        "factor": task.factor, "level": None if task.factor in (None, "base") else str(task.level),
        "seed": task.seed,
    }
    if task.source_trial is not None:  # a confirmation's row names the trial it confirms
        columns["source_trial_id"] = task.source_trial
        if task.warm_iterations is not None:
            columns["continued_from_iterations"] = task.warm_iterations
    return columns


def versions(block: str | None = None) -> str:
    """The code a row was made with; with `block`, where its family's code came from (`sr_search`, an installed
    package's version, or a block file with its SHA-256)."""
    import numpy
    import pandas

    out = {"sr_search": __import__("sr_search").__version__, "torch": torch.__version__,
           "numpy": numpy.__version__, "pandas": pandas.__version__, "python": platform.python_version()}
    if block is not None and family_source(block) != "sr_search":
        out["block"] = family_source(block)
    return json.dumps(out)


def pick_device(gpus: float) -> torch.device:
    """The trial's device: the GPU Ray assigned when the study asks for one, else the CPU."""
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def local_timer(study: Study, device: torch.device, exclusive: bool, cache: TimingCache | None = None) -> Timer:
    """Time on this process's device under the study's protocol, reusing `cache` (a trial's in-memory view)."""
    def time(spec: ArchSpec, protocol: TimingProtocol | None = None) -> tuple[Timing, bool]:
        return time_spec(spec, protocol or study.protocol, device, cache, exclusive=exclusive)

    return time


@lru_cache(maxsize=4)
def _train_data(spec: DataSpec, scale: int, colors: int, device: str) -> data_mod.TrainData:
    return data_mod.load_train(spec, scale, colors, device)


@lru_cache(maxsize=4)
def _val_data(spec: DataSpec, scale: int, colors: int, multiple: int):
    sets = data_mod.load_val(spec, scale, colors)
    return sets, metrics.bicubic_baseline(sets, scale, colors, multiple=multiple)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def run_trial(
    task: TrialTask,
    study: Study,
    *,
    device: torch.device,
    exclusive_timing: bool,
    timer: Timer | None = None,
    report: Report | None = None,
    rungs: Rungs | None = None,
) -> TrialOutcome:
    """Run one candidate of `study`; returns its row (and what the recorder keeps besides). Touches no file.

    `timer` times the deployed network (default: here, on `device`, uncached); `report(metrics)` receives each
    validation during training (the runner forwards it to Tune, and so to the progress display); `rungs` stops
    training at each rung budget to report the quality so far (successive halving: the caller may never return).
    """
    timer = timer or local_timer(study, device, exclusive_timing)
    row = {**task_columns(task, study.name), "status": TrialStatus.COMPLETE, "error": None, "started_at": _now(),
           "host": socket.gethostname(), "versions": versions(task.spec.block), "timing_protocol": study.protocol.name}
    outcome = TrialOutcome(row)

    def finish(status: str, error: str | None = None) -> TrialOutcome:
        row.update(status=status, error=error, finished_at=_now())
        return outcome

    if rungs is not None and rungs.resume is not None:  # cost and timing were measured when it started
        resumed_at = row["started_at"]
        row.update({k: v for k, v in rungs.resume["row"].items() if k not in RUNG_ONLY and not k.startswith("rung_")})
        row["paused_seconds"] = paused_seconds(rungs.resume["row"], resumed_at)
    else:
        cut_short = _cost_first(task, study, timer, row, outcome)
        if cut_short is not None:
            return finish(*cut_short)

    # 2. Train, deploy, evaluate: a GPU running out of memory in any of them fails this trial only.
    try:
        return _train_deploy_evaluate(task, study, device, outcome, finish, report, rungs)
    except torch.OutOfMemoryError as exc:  # GPU allocators only; train.run names the iteration itself
        first_line = str(exc).splitlines()[0] if str(exc) else "no details"
        stage = "after training (deploy or evaluation)" if "train_iterations" in row else "while training"
        oom = (f"out of GPU memory {stage} (batch {study.train.batch_size}, LR patch {study.train.lr_patch}): "
               f"{first_line}")
    train.release_memory(device)  # outside the except clause: its traceback no longer pins the tensors
    return finish(TrialStatus.FAILED, oom)


def _cost_first(task: TrialTask, study: Study, timer: Timer, row: dict[str, Any],
                outcome: TrialOutcome) -> tuple[str, str] | None:
    """Params, MACs and the LR patch, then the latency of the deployed network, into `row`; (status, reason) when
    the candidate cannot or may not be trained."""
    spec, protocol = task.spec, study.protocol
    try:
        cost = protocol_cost(spec, protocol)
    except SrSearchError as exc:  # e.g. the protocol's input size does not divide by the unshuffle factor
        row["constraint_input_size"] = 1.0
        return TrialStatus.INFEASIBLE, f"cannot run under timing protocol {protocol.name!r}: {exc}"
    row.update(params_train=cost.params_train, params_deploy=cost.params_deploy, macs_deploy=cost.macs_deploy)
    if study.protocol.score in ESR:  # the organisers' FLOPs: fvcore at 1x3x256x256
        row["ntire_esr_gflops"] = fvcore_gflops(deploy_pair(spec)[1], spec.colors)
    try:
        data_mod.check_patch(spec, study.train.lr_patch)
    except SrSearchError as exc:  # the study's patch size cannot feed this candidate (ESA, unshuffle)
        row["constraint_lr_patch"] = 1.0
        return TrialStatus.INFEASIBLE, str(exc)
    limits = study.constraints()
    violations = limits.violations(params=cost.params_deploy, macs=cost.macs_deploy)
    if all(v <= 0 for v in violations.values()):
        timing_start = time.perf_counter()
        try:
            measured, cached = timer(spec)
            row["timing_seconds"] = time.perf_counter() - timing_start
        except SrSearchError as exc:
            if isinstance(exc, EngineError):  # exported, built or checked wrongly: recorded, never timed
                row.update(timing_runtime=protocol.runtime, engine_failure=exc.stage)
            return TrialStatus.FAILED, f"timing failed: {exc}"
        row.update(timing_columns(measured, cached))
        outcome.timing = None if cached else measured
        failed = _also_time(spec, study, timer, row)
        row["timing_seconds"] = time.perf_counter() - timing_start  # every protocol it is timed under
        if failed is not None:
            return TrialStatus.FAILED, failed
        violations.update(limits.violations(latency_ms=measured.latency_ms))
    row["constraint_violation"] = max(violations.values()) if violations else None
    row.update({f"constraint_{k}": float(v) for k, v in violations.items()})
    if any(v > 0 for v in violations.values()):
        broken = ", ".join(f"{k} exceeded by {v:g}" for k, v in violations.items() if v > 0)
        return TrialStatus.INFEASIBLE, f"violates the space's constraints: {broken}"
    return None


def _also_time(spec: ArchSpec, study: Study, timer: Timer, row: dict[str, Any]) -> str | None:
    """The latency under each protocol the study also times in (`also_time`: other runtimes) as
    `latency_ms@<protocol>`; a failure is `timing_error@<protocol>` and the trial goes on, unless an objective
    names that latency (then the reason the trial failed)."""
    for p in study.also_protocols():
        try:
            other, _ = timer(spec, p)
        except SrSearchError as exc:
            row[f"latency_ms@{p.name}"] = math.nan  # a float column in every row, NaN where not measured
            row[f"timing_error@{p.name}"] = str(exc)
            if f"latency_ms@{p.name}" in study.objectives:
                return f"timing failed under protocol {p.name!r} (an objective): {exc}"
            continue
        row[f"latency_ms@{p.name}"] = other.latency_ms
    return None


def _train_deploy_evaluate(task: TrialTask, study: Study, device: torch.device, outcome: TrialOutcome,
                           finish: Callable[..., TrialOutcome], report: Report | None,
                           rungs: Rungs | None) -> TrialOutcome:
    spec, row = task.spec, outcome.row
    untrained = _check_untrained(spec, device, task.seed)  # a broken fusion fails here, before any training
    if untrained is not None:
        row["reparam_max_abs_err"] = untrained[0]
        return finish(TrialStatus.FAILED, f"before training: {untrained[1]}")
    if task.warm_start is not None:  # `confirm --continue`: from the proxy's weights, for the rest of the budget
        study = study.model_copy(update={"train": study.train.model_copy(update={
            "warm_start": task.warm_start, "iterations": study.train.iterations - (task.warm_iterations or 0)})})
    load_start = time.perf_counter()
    try:
        train_data = _train_data(study.data, spec.scale, spec.colors, str(device))
        val_sets, bicubic = _val_data(study.data, spec.scale, spec.colors, spec.unshuffle)
        data_mod.check_val(spec, val_sets)
    except SrSearchError as exc:
        return finish(TrialStatus.FAILED, str(exc))
    spent = {"data": time.perf_counter() - load_start, "validate": 0.0}  # before the trainer (and its state) exists
    torch.manual_seed(task.seed)  # the same initial weights whatever ran before in this process
    model = build(spec).to(device)

    def val_fn(m: torch.nn.Module) -> dict[str, float]:
        return metrics.evaluate(m, val_sets, spec.scale, spec.colors, device)

    def on_validation(iteration: int, values: dict[str, float]) -> None:
        if report is not None:
            report({"iteration": iteration, **{k: v for k, v in values.items() if isinstance(v, float)}})

    try:
        trainer = train.Trainer(model, train_data, study.train, task.seed, device=device, val_fn=val_fn,
                                on_validation=on_validation,
                                on_progress=(lambda done: report({"iteration": done})) if report else None)
        if rungs is None or rungs.resume is None:  # where it starts (a resumed row has it): a collapse ends far below
            val_start = time.perf_counter()
            row["start_psnr_y"] = val_fn(trainer.model)["psnr_y"]
            spent["validate"] += time.perf_counter() - val_start
        result = _train_through_rungs(trainer, rungs, row, study, val_fn, bicubic, spent)
    except SrSearchError as exc:  # e.g. a warm-start checkpoint that does not fit this candidate
        return finish(TrialStatus.FAILED, str(exc))
    row.update(train_iterations=result.iterations, final_loss=result.final_loss,
               val_curve=json.dumps([[it, round(m["psnr_y"], 6)] for it, m in result.validations]),
               **time_columns(trainer, row))  # train_seconds among them: active training only
    if result.status != "complete":
        del model, trainer
        train.release_memory(device)
        return finish(TrialStatus.FAILED, result.error)

    # 3. Deploy and check that it is the same function.
    model.eval()
    deploy_start = time.perf_counter()
    deployed = reparameterize(model)
    err = check_equivalence(model, deployed)
    row["reparam_max_abs_err"] = err
    row["deploy_seconds"] = time.perf_counter() - deploy_start
    if not err <= EQUIVALENCE_TOLERANCE:
        return finish(TrialStatus.FAILED,
                      f"reparameterized model differs from the trained one: max abs error {err:.3g}")
    if study.keep_checkpoints:
        outcome.weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}

    # 4. Quality of what is deployed.
    val_start = time.perf_counter()
    row.update(metrics.evaluate(deployed, val_sets, spec.scale, spec.colors, device))
    row.update(bicubic)
    row["psnr_gain"] = row["psnr_y"] - row["bicubic_psnr_y"]
    # below bicubic (under-trained) and collapsed (a defect) are two flags, defined in results.quality_flags
    spread = output_spread(deployed, val_sets, spec.scale, spec.colors, device)
    row["validate_seconds"] += time.perf_counter() - val_start
    row.update(row_flags(row["psnr_y"], row["bicubic_psnr_y"], row.get("start_psnr_y"), spread))
    row.update(score_columns(row, study.protocol.score))
    return finish(TrialStatus.COMPLETE)


def _check_untrained(spec: ArchSpec, device: torch.device, seed: int) -> tuple[float, str] | None:
    """Deploy the untrained network, with random BN statistics, on the trial's device and in its dtype, and compare
    (the post-training check stays): (error, where it lies) when it does not deploy exactly, else None. Uses its own
    generators, so the trial's initial weights and data order are unchanged."""
    with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
        model = build(spec)
    randomize_statistics(model, torch.Generator().manual_seed(seed))
    err, problem = check_untrained(model.to(device), tolerance=EQUIVALENCE_TOLERANCE, seed=seed)
    return None if problem is None else (err, problem)


def _train_through_rungs(trainer: train.Trainer, rungs: Rungs | None, row: dict[str, Any], study: Study,
                         val_fn: Callable[[torch.nn.Module], dict[str, float]],
                         bicubic: dict[str, float], spent: dict[str, float] | None = None) -> train.TrainResult:
    """Train to the full budget, stopping at each rung to report the quality so far. `spent`: seconds this
    segment spent on data and validation before the trainer existed (added to its running totals)."""
    first = 0
    if rungs is not None and rungs.resume is not None:
        trainer.load_state_dict(rungs.resume["trainer"])
        first = rungs.resume["rung"] + 1
    trainer.data_seconds += (spent or {}).get("data", 0.0)
    trainer.validate_seconds += (spent or {}).get("validate", 0.0)
    if rungs is not None and rungs.resume is not None:
        rungs.on_rung(rungs.resume["rung"], rungs.resume["row"], trainer.state_dict)  # decided again, as it was
    for index, budget in enumerate(rungs.budgets if rungs is not None else ()):
        if index < first or budget >= study.train.iterations:
            continue
        result = trainer.run_until(budget)
        if result.status != "complete":
            return result
        trainer.model.eval()
        val_start = time.perf_counter()
        quality = val_fn(trainer.model)  # the training form in eval mode computes the deployed function
        trainer.validate_seconds += time.perf_counter() - val_start
        trainer.model.train()
        stopped = {**rung_row(row, index, result, quality, bicubic, study), **time_columns(trainer, row),
                   "finished_at": _now()}  # when it stopped here: a resumed trial counts its pause from it
        rungs.on_rung(index, stopped, trainer.state_dict)
    return trainer.run_until(study.train.iterations)


def time_columns(trainer: train.Trainer, row: dict[str, Any]) -> dict[str, float]:
    """Where the trial's time went so far, over all its segments: active training, data (preparing or mapping the
    images, cutting and feeding batches), validation, and the pauses between segments."""
    return {"train_seconds": trainer.seconds, "data_seconds": trainer.data_seconds,
            "validate_seconds": trainer.validate_seconds, "paused_seconds": float(row.get("paused_seconds") or 0.0)}


def paused_seconds(stopped_row: dict[str, Any], resumed_at: datetime) -> float:
    """The pauses of a trial resumed at `resumed_at` from the rung row it left when it stopped: the earlier ones
    plus the time since it stopped."""
    before = float(stopped_row.get("paused_seconds") or 0.0)
    stopped = stopped_row.get("finished_at")
    if not isinstance(stopped, datetime):
        return before
    return before + max(0.0, (resumed_at - stopped).total_seconds())


#: columns of a rung's row that a finished trial does not keep
RUNG_ONLY = ("status", "error", "rung", "train_iterations", "train_seconds", "final_loss", "finished_at")


def rung_row(row: dict[str, Any], index: int, result: train.TrainResult, quality: dict[str, float],
             bicubic: dict[str, float], study: Study) -> TrialRow:
    """The row a candidate stopped at a rung leaves: status 'pruned', the iterations it reached, and its quality
    there in `rung_*` columns only (never in `psnr_y`, so a partial result cannot pass for a full one)."""
    measured = {**quality, "psnr_gain": quality["psnr_y"] - bicubic["bicubic_psnr_y"]}
    rung = {**row, **bicubic, **{f"rung_{k}": v for k, v in measured.items()}}
    measured.update({k.removeprefix("rung_"): v for k, v in score_columns(rung, study.protocol.score, "rung_").items()})
    return {**row, **bicubic, "status": TrialStatus.PRUNED, "error": None, "rung": index,
            "rung_iterations": result.iterations, "train_iterations": result.iterations,
            "train_seconds": result.seconds, "final_loss": result.final_loss,
            **{f"rung_{k}": v for k, v in measured.items()}}


def rung_point(rung: dict[str, Any], objectives: dict[str, str]) -> list[float]:
    """The objectives as they stand at a rung: quality measured there, cost exact (known before training);
    NaN where a value is missing."""
    point = []
    for metric in objectives:
        value = rung.get(f"rung_{metric}") if is_quality(metric) else rung.get(metric)
        point.append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan)
    return point


def timing_columns(measured: Timing, cached: bool) -> TimedColumns:
    return {
        "latency_ms": measured.latency_ms, "latency_ms_p90": measured.latency_ms_p90,
        "latency_ms_mean": measured.latency_ms_mean,
        "throughput": measured.throughput, "mpix_per_s": measured.mpix_per_s, "peak_mem_mb": measured.peak_mem_mb,
        "timing_device": measured.device_name, "timing_precision": measured.precision,
        "timing_exclusive": measured.exclusive, "timing_cached": cached, "timing_node": measured.node,
        **({} if measured.runtime == "torch" else {
            "timing_runtime": measured.runtime, "engine_build_s": measured.engine_build_s,
            "engine_versions": measured.engine_versions, "engine_max_abs_err": measured.engine_max_abs_err}),
    }


def retimed_row(row: TrialRow, measured: Timing, study: Study) -> TrialRow:
    """`row` with an exclusive re-timing of its deployed network (the front's confirmation pass,
    docs/architecture.md, "Timing")."""
    out = {**row, **timing_columns(measured, cached=False), "timing_retimed": True}
    out.update(score_columns(out, study.protocol.score))
    return out
