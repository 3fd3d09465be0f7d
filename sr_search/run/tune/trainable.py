"""What runs on a Ray worker: one trial (`train_trial`, the Tune function trainable) and one timing (`time_remotely`,
a Ray task that holds the deployment device). Neither opens a path of the study folder: a trial gets everything with
its config and sends its row, a fresh timing and its trained weights (a Tune checkpoint) back to the driver.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

import ray
import torch
from ray import tune
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ...model.blocks import load_block_module
from ...model.spec import ArchSpec
from ...results.store import row_from_json, row_to_json
from ...study.model import Study
from ...study.protocols import TimingProtocol
from ..plan import task_of
from ..timing.cache import TimingCache
from ..timing.measure import time_spec
from ..timing.result import Timing
from ..trial import Rungs, Timer, local_timer, pick_device, rung_point, run_trial

WEIGHTS = "model.pt"
#: a rung checkpoint: {"rung", "row", "trainer"} (tensors and plain data only: loaded with weights_only)
RUNG_STATE = "trainer.pt"


def prepare_worker(study: Study) -> None:
    """Register the study's own block families in this process (a worker imports nothing by itself)."""
    for ref in study.search_space().block_modules:
        load_block_module(ref)


def train_trial(config: dict[str, Any], study: Study, exclusive: bool, timing_on: dict[str, float] | None) -> None:
    """The Tune trainable: run the trial, report validations as they come, then the row."""
    prepare_worker(study)
    torch.set_num_threads(max(1, int(study.resources.cpus_per_trial)))
    task = task_of(config)
    device = pick_device(study.resources.gpus_per_trial)
    cache = TimingCache.in_memory(config.get("timings", []))
    node = ray.get_runtime_context().get_node_id()
    timer = (remote_timer(study, task.trial_id, timing_on, cache) if timing_on
             else on_node(local_timer(study, device, exclusive, cache), node))
    fresh: list[Timing] = []  # a timing measured here goes to the driver's cache with the first report that can

    def timed(spec: ArchSpec, protocol: TimingProtocol | None = None) -> tuple[Timing, bool]:
        timing, cached = timer(spec, protocol)
        if not cached:
            fresh.append(timing)
        return timing, cached

    outcome = run_trial(task, study, device=device, exclusive_timing=exclusive, timer=timed, report=tune.report,
                        rungs=rungs_of(study, config, fresh))
    outcome.row["node"] = node
    final = {**numbers(outcome.row), "status": outcome.row["status"], "error": outcome.row.get("error") or "",
             "trial_id": task.trial_id, "row": row_to_json(outcome.row),
             "timing": fresh_json(fresh)}
    if outcome.weights is None:
        tune.report(final)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(outcome.weights, Path(folder) / WEIGHTS)
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(folder))


def fresh_json(fresh: list[Timing]) -> str | None:
    """The timings measured here and not yet sent (one per protocol the study times under), as one JSON list for the
    driver's cache; None when there is none."""
    if not fresh:
        return None
    text = json.dumps([t.model_dump(mode="json") for t in fresh])
    fresh.clear()
    return text


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a row: what Tune and its dashboard see of it."""
    return {k: v for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def timing_task(study: Study, timing_on: dict[str, float] | None, name: str) -> Any:
    """`time_remotely` as a Ray task that holds the timing device alone: the deployment node's resource when the study
    names one (`timing_on`), else a whole GPU, else the CPUs one trial gets (once no trial runs)."""
    cuda = study.protocol.device == "cuda"
    # outside the calling trial's placement group: the timing device is not among the trial's resources
    options: dict[str, Any] = {"name": name, "num_gpus": 1 if cuda else 0,
                               "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=None)}
    if timing_on:
        options.update(resources=dict(timing_on), num_cpus=0)  # 0 CPUs: never waits for a trial on that node
    else:
        options["num_cpus"] = max(1, int(study.resources.cpus_per_trial))
    return ray.remote(time_remotely).options(**options)


def time_remotely(study: Study, spec_json: str, entries: list[dict[str, Any]], refresh: bool = False,
                  protocol: str | None = None) -> tuple[str, bool]:
    """Time one deployed network where this task runs, exclusively, under the study's protocol (or the one of its
    `also_time` protocols named). Returns (timing JSON, cached)."""
    prepare_worker(study)
    cache = TimingCache.in_memory(entries)
    p = study.timing_protocol(protocol) if protocol else study.protocol
    device = "cuda" if p.device == "cuda" else "cpu"
    timer = on_node(lambda spec, _=None: time_spec(spec, p, device, cache, exclusive=True, refresh=refresh),
                    ray.get_runtime_context().get_node_id())
    timing, cached = timer(ArchSpec.from_json(spec_json))
    return timing.model_dump_json(), cached


def remote_timer(study: Study, trial_id: str, timing_on: dict[str, float], cache: TimingCache) -> Timer:
    """Time on the deployment node (a Ray task there), from this trial."""
    task = timing_task(study, timing_on, f"time {trial_id}")

    def time(spec: ArchSpec, protocol: TimingProtocol | None = None) -> tuple[Timing, bool]:
        entries = cache.entries(spec.deploy_key(), protocol or study.protocol)
        text, cached = ray.get(task.remote(study, spec.to_json(), entries, False, protocol.name if protocol else None))
        return Timing.model_validate_json(text), cached

    return time


def on_node(timer: Timer, node: str) -> Timer:
    """`timer`, with fresh timings marked as measured on `node` (cached ones keep where they were measured)."""
    def time(spec: ArchSpec, protocol: TimingProtocol | None = None) -> tuple[Timing, bool]:
        timing, cached = timer(spec, protocol)
        return (timing if cached or timing.node else timing.model_copy(update={"node": node})), cached

    return time


# --- successive halving: rung reports and resuming ------------------------------------------------------------


def rungs_of(study: Study, config: dict[str, Any], fresh: list[Timing]) -> Rungs | None:
    """The trial's rungs when the study prunes: report at each, and continue from a rung checkpoint when there is
    one (Tune's own, after a pause; else the one a previous session left, named in the config)."""
    if study.pruning is None:
        return None
    budgets = tuple(study.pruning.rungs(study.train.iterations)[:-1])
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = _load_state((Path(folder) / RUNG_STATE).read_bytes())
    elif config.get("resume_from"):
        resume = _load_state(read_uri(f"{config['resume_from'].rstrip('/')}/{RUNG_STATE}"))
    return Rungs(budgets, on_rung=lambda index, row, state: report_rung(study, index, row, state, fresh),
                 resume=resume)


def report_rung(study: Study, index: int, row: dict[str, Any], state: Any, fresh: list[Timing]) -> None:
    """Report a rung to Tune with a checkpoint to continue from; the scheduler decides there (it may pause or stop
    the trial, and this call then never returns)."""
    timing = fresh_json(fresh)
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"rung": index, "row": row_to_json(row), "trainer": state()}, Path(folder) / RUNG_STATE)
        tune.report({**{k: v for k, v in numbers(row).items() if k.startswith("rung_")}, "rung": index,
                     "iteration": row["rung_iterations"], "rung_point": rung_point(row, study.objectives),
                     "rung_row": row_to_json(row), "timing": timing},
                    checkpoint=tune.Checkpoint.from_directory(folder))


def _load_state(blob: bytes) -> dict[str, Any]:
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return {**state, "row": row_from_json(state["row"])}


def read_uri(uri: str) -> bytes:
    """A file from a local path or any pyarrow filesystem URI (s3://, gs://, ...)."""
    filesystem, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def checkpoint_uri(checkpoint: Any) -> str:
    """Where a Tune checkpoint lives, as a path (local) or a URI another process can open."""
    filesystem = checkpoint.filesystem
    if filesystem is None or isinstance(filesystem, pafs.LocalFileSystem):
        return str(checkpoint.path)
    return f"{filesystem.type_name}://{checkpoint.path}"
