"""One short training run of one candidate: Adam on random patches, fixed iteration budget.

Kept lean on purpose (the benchmark target is >= 0.9 of a bare PyTorch loop): patches are cut on the host from
images mapped once per node and converted to float on the training device, the learning rate is set directly
instead of through a scheduler object, and losses are read back to the host once per logging window, so a CUDA
run does not synchronise every step. The NaN/inf guard still names the
exact iteration because each step's loss is kept until the window is checked.

RepSR's Frozen BN: at `int(frozen_bn * iterations)` every `FreezableBN` switches to its running statistics and
stops updating them, while gamma/beta keep training, so the final phase trains the function that is deployed.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SrSearchError
from ..model.blocks.layers import freeze_bn
from ..results.study_dir import atomic_write
from ..study.settings import TrainBudget
from .data import TrainData, check_patch

Metrics = dict[str, float]
CHARBONNIER_EPS = 1e-3


@dataclass(frozen=True)
class TrainResult:
    """What one run did. `status='failed'` carries the reason in `error` (the run itself does not raise)."""

    iterations: int
    seconds: float  # active training: wall time less batch preparation and validation
    final_loss: float | None  # mean loss over the last logging window
    status: Literal["complete", "failed"]
    error: str | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (iteration, mean loss of its window)
    validations: list[tuple[int, Metrics]] = field(default_factory=list)
    data_seconds: float = 0.0  # cutting batches on the host and feeding them to the device
    validate_seconds: float = 0.0  # the validations during training


@dataclass(frozen=True)
class MixedPrecision:
    """How a training step computes: the autocast dtype (None: the model's own dtype) on `device_type`, and whether
    the loss is scaled (fp16 only: its narrow range underflows small gradients; bf16 has fp32's range)."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def scaled(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.scaled else None


def mixed_precision(amp: str, device: torch.device) -> MixedPrecision:
    """The precision plan for `budget.amp` on `device` ('auto' = fp16 on CUDA only)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return MixedPrecision(device.type)
    return MixedPrecision(device.type, torch.bfloat16 if amp == "bf16" else torch.float16)


def lr_at(budget: TrainBudget, iteration: int) -> float:
    """Learning rate of the 0-based `iteration`: cosine from `lr` towards 0, step decay, or constant."""
    if budget.schedule == "cosine":
        return budget.lr * 0.5 * (1.0 + math.cos(math.pi * iteration / budget.iterations))
    if budget.schedule == "multistep":
        steps = sum(iteration >= int(m * budget.iterations) for m in budget.milestones)
        return budget.lr * budget.gamma**steps
    return budget.lr


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "l1":
        return F.l1_loss
    if name == "l2":
        return F.mse_loss
    return lambda out, target: torch.sqrt((out - target) ** 2 + CHARBONNIER_EPS**2).mean()


def _log_window(iterations: int) -> int:
    """Iterations per loss read-back: about 100 history points, at most 100 iterations apart."""
    return max(1, min(100, iterations // 100))


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict (bare, or under 'state_dict'/'params'/'model') into `model`, strictly."""
    p = Path(path)
    if not p.is_file():
        raise SrSearchError(f"train.warm_start: checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SrSearchError(f"train.warm_start: cannot read checkpoint {p}: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "params", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise SrSearchError(f"train.warm_start: {p} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SrSearchError(f"train.warm_start: checkpoint {p} does not fit the model: {exc}") from None


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write the state_dict through the one atomic writer (`results.study_dir.atomic_write`: temporary file, flushed,
    renamed), so a killed trial never leaves half a file and a full disk is a `StudyWriteError` naming the path."""
    state = model.state_dict()
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def _check_inputs(model: nn.Module, data: TrainData, budget: TrainBudget) -> None:
    spec = getattr(model, "spec", None)
    if spec is not None:
        if spec.scale != data.scale or spec.colors != data.colors:
            raise SrSearchError(
                f"training data is x{data.scale} with colors={data.colors} but the model is x{spec.scale} with "
                f"colors={spec.colors}; load_train with the spec's scale and colors"
            )
        check_patch(spec, budget.lr_patch)
    data.check_fits(budget.lr_patch)


def run(
    model: nn.Module,
    train_data: TrainData,
    budget: TrainBudget,
    seed: int,
    *,
    frozen_bn: float | None | Literal["spec"] = "spec",
    device: torch.device | str | None = None,
    val_fn: Callable[[nn.Module], Metrics] | None = None,
    on_validation: Callable[[int, Metrics], None] | None = None,
    checkpoint_path: str | Path | None = None,
) -> TrainResult:
    """Train `model` in place for `budget.iterations` steps and report what happened.

    `frozen_bn`: fraction of the run after which BN is frozen; "spec" (default) takes `model.spec.frozen_bn`,
    None never freezes. `device` defaults to the data's device. `val_fn(model)` is called every
    `budget.val_every` iterations and at the end; each result goes to `on_validation(iteration, metrics)` (the
    runner reports through it). `checkpoint_path` receives the final state_dict. A non-finite loss or running
    out of GPU memory ends the run with status 'failed' and the reason; bad input raises `SrSearchError`.
    """
    trainer = Trainer(model, train_data, budget, seed, frozen_bn=frozen_bn, device=device, val_fn=val_fn,
                      on_validation=on_validation)
    result = trainer.run_until(budget.iterations)
    if checkpoint_path is not None and result.status == "complete":
        save_checkpoint(model, checkpoint_path)
    return result


class Trainer:
    """One candidate's training, in segments: `run_until(n)` trains up to iteration n, `state_dict()` holds all it
    needs to continue exactly (model, optimizer, loss scaler, patch sampler, iteration), so a candidate paused at a
    rung and resumed later follows the same trajectory as one trained without a pause.

    `anneal`: the learning rate schedule runs over the whole budget ('budget', the default: a paused candidate
    continues where the schedule stands) or restarts in every segment ('segment', SGDR-style; for comparison).
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: TrainData,
        budget: TrainBudget,
        seed: int,
        *,
        frozen_bn: float | None | Literal["spec"] = "spec",
        device: torch.device | str | None = None,
        val_fn: Callable[[nn.Module], Metrics] | None = None,
        on_validation: Callable[[int, Metrics], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
        anneal: Literal["budget", "segment"] = "budget",
        prefetch: bool | None = None,
    ) -> None:
        self.dev = torch.device(device) if device is not None else train_data.device
        if frozen_bn == "spec":
            frozen_bn = getattr(getattr(model, "spec", None), "frozen_bn", None)
        if frozen_bn is not None and not 0 <= frozen_bn <= 1:
            raise SrSearchError(f"frozen_bn must be a fraction in [0, 1] or None; got {frozen_bn!r}")
        _check_inputs(model, train_data, budget)
        model.to(self.dev).train()
        if budget.warm_start is not None:
            load_checkpoint(model, budget.warm_start)
        self.model, self.data, self.budget = model, train_data, budget
        self.val_fn, self.on_validation, self.on_progress, self.anneal = val_fn, on_validation, on_progress, anneal
        # cut the next batch on the host while the GPU runs this step (None: on for CUDA, where it overlaps)
        self.prefetch = self.dev.type == "cuda" if prefetch is None else prefetch
        self.progress_every = max(1, budget.iterations // 10)  # ten progress reports per run
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        # foreach: one fused update over all tensors (default on CUDA only); ~2x faster steps for small nets on CPU
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr_at(budget, 0), foreach=True)
        self.precision = mixed_precision(budget.amp, self.dev)
        self.scaler = self.precision.scaler()
        self.loss_fn = _loss_fn(budget.loss)
        self.freeze_at = None if frozen_bn is None else int(frozen_bn * budget.iterations)
        self.window = _log_window(budget.iterations)
        # batches follow the model: its device, and its dtype (a float64 model trains on float64 patches)
        self.dtype = next(model.parameters()).dtype
        self.pin = self.dev.type == "cuda" and train_data.device.type != "cuda"
        self.done = 0
        self.seconds = 0.0
        self.data_seconds = 0.0
        self.validate_seconds = 0.0
        self.history: list[tuple[int, float]] = []
        self.validations: list[tuple[int, Metrics]] = []
        self.segment_start = 0

    # --- continuing --------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "generator": self.generator.get_state(), "done": self.done, "seconds": self.seconds,
                "data_seconds": self.data_seconds, "validate_seconds": self.validate_seconds,
                "history": list(self.history), "validations": list(self.validations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.done, self.seconds = int(state["done"]), float(state["seconds"])
        self.data_seconds = float(state.get("data_seconds", 0.0))
        self.validate_seconds = float(state.get("validate_seconds", 0.0))
        self.history, self.validations = list(state["history"]), list(state["validations"])
        if self.freeze_at is not None and self.done > self.freeze_at:
            freeze_bn(self.model)

    def lr(self, iteration: int) -> float:
        if self.anneal == "segment" and self.budget.schedule == "cosine":
            horizon = max(1, self._segment_end - self.segment_start)
            return self.budget.lr * 0.5 * (1.0 + math.cos(math.pi * (iteration - self.segment_start) / horizon))
        return lr_at(self.budget, iteration)

    # --- training ----------------------------------------------------------------------------------------------

    def run_until(self, stop: int) -> TrainResult:
        """Train from the current iteration up to `stop` (at most the budget); validate every `val_every` and at the
        end of the budget. Returns what happened so far (status 'failed' with the reason on a non-finite loss or
        running out of GPU memory)."""
        budget, model, optimizer = self.budget, self.model, self.optimizer
        total, bs, patch = budget.iterations, budget.batch_size, budget.lr_patch
        stop = min(stop, total)
        self.segment_start, self._segment_end = self.done, stop
        pending: list[torch.Tensor] = []
        val_seconds = data_seconds = 0.0
        current_lr = None
        start = time.perf_counter()

        def account() -> None:
            self.seconds += time.perf_counter() - start - val_seconds - data_seconds
            self.data_seconds += data_seconds
            self.validate_seconds += val_seconds

        def fail(reason: str) -> TrainResult:
            account()
            last = self.history[-1][1] if self.history else None
            return TrainResult(self.done, self.seconds, last, "failed", reason, self.history, self.validations,
                               self.data_seconds, self.validate_seconds)

        feed = _Feed(lambda: self.data.cut(bs, patch, self.generator, pin=self.pin, augment=self.dev.type == "cpu"),
                     stop - self.done, self.prefetch)
        try:
            for it in range(self.done, stop):
                if it == self.freeze_at:
                    freeze_bn(model)
                lr = self.lr(it)
                if lr != current_lr:
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    current_lr = lr
                t_data = time.perf_counter()
                lr_batch, hr_batch = self.data.finish(feed.take(), self.dev, self.dtype)
                data_seconds += time.perf_counter() - t_data
                loss = _step(model, optimizer, self.loss_fn, lr_batch, hr_batch, self.precision, self.scaler,
                             budget.grad_clip)
                pending.append(loss)
                done = self.done = it + 1
                validate_now = self.val_fn is not None and (
                    done == total or (budget.val_every > 0 and done % budget.val_every == 0)
                )
                if done % self.window == 0 or done in (total, stop) or validate_now:
                    values = torch.stack(pending).tolist()  # the one host sync per window
                    first = done - len(values)
                    pending.clear()
                    for k, v in enumerate(values):
                        if not math.isfinite(v):
                            self.done = first + k + 1
                            return fail(f"loss became {v} at iteration {self.done} (lr {self.lr(self.done - 1):.3g})")
                    self.history.append((done, sum(values) / len(values)))
                if self.on_progress is not None and done % self.progress_every == 0 and not validate_now:
                    self.on_progress(done)
                if validate_now:
                    t = time.perf_counter()
                    metrics = self.val_fn(model)
                    self.validations.append((done, metrics))
                    if self.on_validation is not None:
                        self.on_validation(done, metrics)
                    model.train()
                    val_seconds += time.perf_counter() - t
        except torch.OutOfMemoryError as exc:  # raised by GPU allocators only (CUDA, ...)
            first_line = str(exc).splitlines()[0] if str(exc) else "no details"
            oom = f"out of GPU memory at iteration {self.done + 1} (batch {bs}, LR patch {patch}): {first_line}"
        else:
            oom = None
        finally:
            feed.close()
        if oom is not None:  # out of the except clause, so its traceback no longer pins the step's tensors
            pending.clear()
            optimizer.zero_grad(set_to_none=True)
            release_memory(self.dev)
            return fail(oom)
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        account()
        last = self.history[-1][1] if self.history else None
        return TrainResult(self.done, self.seconds, last, "complete", None, self.history, self.validations,
                           self.data_seconds, self.validate_seconds)


class _Feed:
    """The segment's `count` batches from `cut`, drawn in order; with `ahead`, one batch ahead in a background
    thread (the host's block copies release the GIL, so the next batch is cut while the GPU runs this step). It never
    draws past the segment, so the sampler's state at a rung is the same with or without it."""

    def __init__(self, cut: Callable[[], Any], count: int, ahead: bool) -> None:
        self.cut, self.remaining = cut, count
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="sr-search-batches") if ahead and count > 1 else None
        self.next = self.pool.submit(cut) if self.pool is not None else None

    def take(self) -> Any:
        self.remaining -= 1
        if self.pool is None or self.next is None:
            return self.cut()
        batch = self.next.result()
        self.next = self.pool.submit(self.cut) if self.remaining > 0 else None
        return batch

    def close(self) -> None:
        """Wait for a batch drawn ahead (a segment that failed drops it), so nothing draws behind a checkpoint."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lr_batch: torch.Tensor,
    hr_batch: torch.Tensor,
    precision: MixedPrecision,
    scaler: torch.amp.GradScaler | None,
    grad_clip: float | None,
) -> torch.Tensor:
    """One optimisation step; returns the detached loss (read back to the host later, once per window).

    With loss scaling, gradients are unscaled before clipping and a step whose gradients overflowed is skipped by
    the scaler (which then lowers the scale), as torch.amp prescribes."""
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        out = model(lr_batch)
    loss = loss_fn(out.to(hr_batch.dtype), hr_batch)  # the loss in the data's precision, never in fp16
    if scaler is None:
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def release_memory(device: torch.device) -> None:
    """Hand freed GPU memory back after a failure, so the next trial on this worker starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
