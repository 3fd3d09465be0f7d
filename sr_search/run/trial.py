"""One trial, start to finish, without Ray or Optuna (the runner wraps it; the benchmark calls it in a loop).

    cheap checks (params, MACs, latency via the timing cache) -> infeasible rows stop here, untrained
    -> train -> reparameterize -> equivalence check -> evaluate the deployed model -> time it -> one row

Every outcome writes exactly one row, atomically. A trial whose row already exists returns that row
without running again, which is what makes a resumed study run only what is missing.
"""

from __future__ import annotations

import json
import platform
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import SrSearchError
from ..model.deploy import check_equivalence, reparameterize
from ..model.network import build
from ..model.spec import ArchSpec
from ..results.store import read_trial_row, spec_columns, write_trial_row
from ..results.study_dir import StudyDir
from . import data as data_mod
from . import metrics, train
from .timing import measure as timing
from .timing.cache import TimingCache

#: Deployed and trained models must agree to fp32 rounding (DESIGN 5).
EQUIVALENCE_TOLERANCE = 1e-4

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrialTask:
    """What one trial needs; small and picklable so Ray can ship it."""

    trial_id: str
    spec: ArchSpec
    seed: int
    baseline: str | None = None
    factor: str | None = None
    level: Any = None


def task_columns(task: TrialTask, study_name: str) -> dict[str, Any]:
    """The columns a trial's row has whatever happens to it: who it is and what it was asked to run."""
    return {
        "study": study_name, "trial_id": task.trial_id, **spec_columns(task.spec), "baseline": task.baseline,
        "factor": task.factor, "level": None if task.factor in (None, "base") else str(task.level),
        "seed": task.seed,
    }


def versions() -> str:
    import numpy
    import pandas

    return json.dumps({"sr_search": __import__("sr_search").__version__, "torch": torch.__version__,
                       "numpy": numpy.__version__, "pandas": pandas.__version__,
                       "python": platform.python_version()})


def pick_device(gpus: float) -> torch.device:
    """The trial's device: the GPU Ray assigned when the study asks for one, else the CPU."""
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@lru_cache(maxsize=4)
def _train_data(spec: data_mod.DataSpec, scale: int, colors: int, device: str) -> data_mod.TrainData:
    return data_mod.load_train(spec, scale, colors, device)


@lru_cache(maxsize=4)
def _val_data(spec: data_mod.DataSpec, scale: int, colors: int, multiple: int):
    sets = data_mod.load_val(spec, scale, colors)
    return sets, metrics.bicubic_baseline(sets, scale, colors, multiple=multiple)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def run_trial(
    task: TrialTask,
    study,
    study_dir: Path,
    *,
    device: torch.device,
    exclusive_timing: bool,
    report: Report | None = None,
) -> dict[str, Any]:
    """Run one candidate of `study` and return its row (also written to `trials/<id>.parquet`)."""
    existing = read_trial_row(study_dir, task.trial_id)
    if existing is not None:
        return existing
    spec = task.spec
    protocol = study.protocol
    row = {**task_columns(task, study.name), "status": "complete", "error": None, "started_at": _now(),
           "host": socket.gethostname(), "versions": versions(), "timing_protocol": protocol.name}

    def finish(status: str, error: str | None = None) -> dict[str, Any]:
        row.update(status=status, error=error, finished_at=_now())
        write_trial_row(study_dir, row)
        return row

    # 1. Cheap checks before any training.
    try:
        cost = timing.protocol_cost(spec, protocol)
    except SrSearchError as exc:  # e.g. the protocol's input size does not divide by the unshuffle factor
        row["constraint_input_size"] = 1.0
        return finish("infeasible", f"cannot run under timing protocol {protocol.name!r}: {exc}")
    row.update(params_train=cost.params_train, params_deploy=cost.params_deploy, macs_deploy=cost.macs_deploy)
    try:
        data_mod.check_patch(spec, study.train.lr_patch)
    except SrSearchError as exc:  # the study's patch size cannot feed this candidate (ESA, unshuffle)
        row["constraint_lr_patch"] = 1.0
        return finish("infeasible", str(exc))
    limits = study.constraints()
    violations = limits.violations(params=cost.params_deploy, macs=cost.macs_deploy)
    cache = TimingCache(StudyDir(study_dir).timing_cache)
    measured = None
    if limits.max_latency_ms is not None and all(v <= 0 for v in violations.values()):
        measured = _time(spec, protocol, device, cache, exclusive_timing, row)
        if measured is None:
            return finish("failed", row["error"])
        violations.update(limits.violations(latency_ms=measured.latency_ms))
    row["constraint_violation"] = max(violations.values()) if violations else None
    row.update({f"constraint_{k}": float(v) for k, v in violations.items()})
    if any(v > 0 for v in violations.values()):
        broken = ", ".join(f"{k} exceeded by {v:g}" for k, v in violations.items() if v > 0)
        return finish("infeasible", f"violates the space's constraints: {broken}")

    # 2. Train, deploy, evaluate, time: a GPU running out of memory in any of them fails this trial only.
    try:
        return _train_deploy_evaluate(task, study, study_dir, device, cache, exclusive_timing, measured, row, finish,
                                      report)
    except torch.OutOfMemoryError as exc:  # GPU allocators only; train.run names the iteration itself
        first_line = str(exc).splitlines()[0] if str(exc) else "no details"
        stage = "after training (deploy, evaluation or timing)" if "train_iterations" in row else "while training"
        oom = (f"out of GPU memory {stage} (batch {study.train.batch_size}, LR patch {study.train.lr_patch}): "
               f"{first_line}")
    train.release_memory(device)  # outside the except clause: its traceback no longer pins the tensors
    return finish("failed", oom)


def _train_deploy_evaluate(task, study, study_dir, device, cache, exclusive_timing, measured, row, finish, report):
    spec = task.spec
    protocol = study.protocol
    torch.manual_seed(task.seed)
    try:
        train_data = _train_data(study.data, spec.scale, spec.colors, str(device))
        val_sets, bicubic = _val_data(study.data, spec.scale, spec.colors, spec.unshuffle)
        data_mod.check_val(spec, val_sets)
    except SrSearchError as exc:
        return finish("failed", str(exc))
    model = build(spec).to(device)

    def val_fn(m: torch.nn.Module) -> dict[str, float]:
        return metrics.evaluate(m, val_sets, spec.scale, spec.colors, device)

    def on_validation(iteration: int, values: dict[str, float]) -> None:
        if report is not None:
            report({"iteration": iteration, **{k: v for k, v in values.items() if isinstance(v, float)}})

    checkpoint = StudyDir(study_dir).checkpoint(task.trial_id) if study.keep_checkpoints else None
    try:
        result = train.run(model, train_data, study.train, task.seed, frozen_bn="spec", device=device,
                           val_fn=val_fn, on_validation=on_validation, checkpoint_path=checkpoint)
    except SrSearchError as exc:  # e.g. a warm-start checkpoint that does not fit this candidate
        return finish("failed", str(exc))
    row.update(train_iterations=result.iterations, train_seconds=result.seconds, final_loss=result.final_loss)
    if result.status != "complete":
        del model
        train.release_memory(device)
        return finish("failed", result.error)

    # 3. Deploy and check that it is the same function.
    model.eval()
    deployed = reparameterize(model)
    err = check_equivalence(model, deployed)
    row["reparam_max_abs_err"] = err
    if not err <= EQUIVALENCE_TOLERANCE:
        return finish("failed", f"reparameterized model differs from the trained one: max abs error {err:.3g}")

    # 4. Quality of what is deployed, then its speed.
    quality = metrics.evaluate(deployed, val_sets, spec.scale, spec.colors, device)
    row.update(quality)
    row.update(bicubic)
    row["psnr_gain"] = row["psnr_y"] - row["bicubic_psnr_y"]
    if measured is None:
        measured = _time(spec, protocol, device, cache, exclusive_timing, row, deployed)
        if measured is None:
            return finish("failed", row["error"])
    if protocol.ntire:
        row["ntire_score"] = ntire_score(row)
    return finish("complete")


def ntire_score(row: dict[str, Any]) -> float:
    """NTIRE23 RTSR score; the challenge averages its 244 runs, so the mean latency is the runtime here."""
    return metrics.ntire23_score(row["psnr_y"], row["bicubic_psnr_y"], row["latency_ms_mean"])


def _time(spec, protocol, device, cache, exclusive, row, deployed=None) -> Any:
    """Time the deployed network (once per deploy_key); on failure put the reason in the row, return None."""
    try:
        measured, cached = timing.time_spec(spec, protocol, device, cache, exclusive=exclusive, deployed=deployed)
    except SrSearchError as exc:
        row["error"] = f"timing failed: {exc}"
        return None
    row.update(timing_columns(measured, cached))
    return measured


def timing_columns(measured, cached: bool) -> dict[str, Any]:
    return {
        "latency_ms": measured.latency_ms, "latency_ms_p90": measured.latency_ms_p90,
        "latency_ms_mean": measured.latency_ms_mean,
        "throughput": measured.throughput, "mpix_per_s": measured.mpix_per_s, "peak_mem_mb": measured.peak_mem_mb,
        "timing_device": measured.device_name, "timing_precision": measured.precision,
        "timing_exclusive": measured.exclusive, "timing_cached": cached,
    }



def retime(study, study_dir: str | Path, trial_ids: list[str], device: str) -> int:
    """Time the deployed networks of `trial_ids` again with nothing else running, and update their rows
    (timing_exclusive=True, timing_retimed=True). Runs where the caller holds the device exclusively."""
    study_dir = Path(study_dir)
    cache = TimingCache(StudyDir(study_dir).timing_cache)
    dev = torch.device(device)
    protocol = study.protocol
    fresh: dict[str, Any] = {}
    for trial_id in trial_ids:
        row = read_trial_row(study_dir, trial_id)
        if row is None:
            continue
        spec = ArchSpec.from_json(row["arch_json"])
        key = spec.deploy_key()
        if key not in fresh:  # one exclusive measurement per deployed network
            fresh[key] = timing.time_spec(spec, protocol, dev, cache, exclusive=True, refresh=True)[0]
        row.update(timing_columns(fresh[key], cached=False), timing_retimed=True)
        if protocol.ntire and row.get("psnr_y") is not None:
            row["ntire_score"] = ntire_score(row)
        write_trial_row(study_dir, row)
    return len(trial_ids)
