"""`measure(model, protocol, device) -> Timing` and the cached `time_spec` (docs/architecture.md, "Timing").

The protocols (what a timing depends on) are part of a study (`sr_search.study.protocols`); the cache of timings
is `timing_cache`, the `sr-search time` table `timing_table`.

Never time on a GPU shared with other trials (fractional Ray GPUs): the number is contaminated. The caller knows
whether the device was held exclusively and says so with `exclusive`; it is recorded, not guessed.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import platform
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...errors import SrSearchError
from ...model.cost import Cost, cost, deploy_pair
from ...model.spec import ArchSpec
from ...study.protocols import PROTOCOLS, TimingProtocol, get_protocol, lr_shape
from . import engine as engines
from .cache import TimingCache
from .result import Timing, TimingError

__all__ = ["Timing", "TimingError", "device_name", "measure", "time_spec", "protocol_cost", "DTYPES"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _resolve_device(p: TimingProtocol, device: str | torch.device | None) -> torch.device:
    dev = torch.device(device if device is not None else p.device)
    if dev.type != p.device:
        others = ", ".join(n for n, q in PROTOCOLS.items() if q.device == dev.type) or "a custom one"
        raise SrSearchError(f"timing protocol {p.name!r} times on {p.device!r}, not on device {str(dev)!r}; "
                            f"protocols for {dev.type}: {others}")
    return dev


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(protocol: str | TimingProtocol, device: str | torch.device | None = None) -> str:
    """The name a timing on this device is recorded (and cached) under: the GPU model or the CPU model."""
    dev = _resolve_device(get_protocol(protocol), device)
    if dev.type == "cpu":
        return _cpu_name()
    if not torch.cuda.is_available():
        raise TimingError(f"device {str(dev)!r} requested but CUDA is not available; use the 'cpu' protocol")
    return torch.cuda.get_device_name(dev)


def _prepare(model: nn.Module, p: TimingProtocol, dev: torch.device, shape: tuple[int, ...]):
    """A private copy of the model and the input, converted as the protocol asks (the caller's model is untouched)."""
    work = copy.deepcopy(model).eval().requires_grad_(False).to(device=dev, dtype=DTYPES[p.precision])
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(device=dev, dtype=DTYPES[p.precision])
    if p.channels_last:
        work = work.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return work, x


def _checked_forward(work: nn.Module, x: torch.Tensor, p: TimingProtocol) -> torch.Tensor:
    """One forward that turns failures into a `TimingError` naming the precision: never a silent fp32 re-run."""
    try:
        y = work(x)
    except RuntimeError as exc:  # unsupported dtype kernel, out of memory
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TimingError(f"the model fails under protocol {p.name!r} ({p.precision} on {p.device}, input "
                          f"{tuple(x.shape)}): {first}. It is not timed in another precision instead") from exc
    if not torch.isfinite(y).all():
        raise TimingError(f"the model's output is not finite in {p.precision} under protocol {p.name!r} "
                          f"(overflow); it is not timed in another precision instead")
    return y


def _timed_runs(p: TimingProtocol, run: Callable[[], Any]) -> list[Any]:
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside the loop is noise, not the model's cost
    try:
        return [run() for _ in range(p.reps)]
    finally:
        if gc_was_enabled:
            gc.enable()


def _reset_peak_rss() -> bool:
    """Reset Linux's peak-RSS counter (VmHWM) so it covers only what follows; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc), so the RSS growth counts this model, not memory left resident
    by earlier work; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _measure_cpu(model: nn.Module, p: TimingProtocol, shape: tuple[int, ...]):
    """perf_counter timing with pinned threads (and the CPU time alongside); touches no CUDA API."""
    import psutil

    old_threads = torch.get_num_threads()
    torch.set_num_threads(p.threads)
    try:
        work, x = _prepare(model, p, torch.device("cpu"), shape)
        with torch.inference_mode():
            proc = psutil.Process()
            gc.collect()
            _trim_heap()
            before = proc.memory_info().rss
            have_hwm = _reset_peak_rss()
            y = _checked_forward(work, x, p)
            try:
                peak = _peak_rss() if have_hwm else proc.memory_info().rss
            except OSError:
                peak = proc.memory_info().rss
            out_shape = tuple(y.shape)
            del y
            for _ in range(max(p.warmup - 1, 0)):
                work(x)

            # with one thread torch computes inline, so this thread's CPU time is the forward's
            cpu_clock = time.thread_time if p.threads == 1 else time.process_time

            def run() -> tuple[float, float]:
                cpu0, start = cpu_clock(), time.perf_counter()
                work(x)
                end, cpu1 = time.perf_counter(), cpu_clock()
                return (end - start) * 1e3, (cpu1 - cpu0) * 1e3

            runs = _timed_runs(p, run)
    finally:
        torch.set_num_threads(old_threads)
    times, cpu_times = [r[0] for r in runs], [r[1] for r in runs]
    return times, out_shape, max(peak - before, 0) / 2**20, float(np.median(cpu_times))


def _measure_cuda(model: nn.Module, p: TimingProtocol, dev: torch.device, shape: tuple[int, ...]):
    """CUDA events around each forward, a synchronise after each (as NTIRE23), after a synchronised warm-up."""
    if not torch.cuda.is_available():
        raise TimingError(f"timing protocol {p.name!r} needs CUDA, which is not available; use --protocol cpu")
    old_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = p.cudnn_benchmark
    try:
        with torch.cuda.device(dev), torch.inference_mode():
            times, out_shape, peak = _cuda_runs(model, p, dev, shape)
    except torch.OutOfMemoryError as exc:
        raise TimingError(f"out of memory on {dev} under protocol {p.name!r} (batch {p.batch}, input "
                          f"{tuple(shape)})") from exc
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
    torch.cuda.empty_cache()  # the copy, its input and outputs died with _cuda_runs
    return times, out_shape, peak, None


def _cuda_runs(model: nn.Module, p: TimingProtocol, dev: torch.device,
               shape: tuple[int, ...]) -> tuple[list[float], tuple[int, ...], float]:
    work, x = _prepare(model, p, dev, shape)
    if p.warmup > 0:
        out_shape = tuple(_checked_forward(work, x, p).shape)  # also the first warm-up run
        for _ in range(p.warmup - 1):
            work(x)
    torch.cuda.synchronize(dev)
    # peak over steady-state runs only: cudnn.benchmark's autotuning workspaces are a warm-up cost
    torch.cuda.reset_peak_memory_stats(dev)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    last: list[torch.Tensor] = []

    def run() -> float:
        start.record()
        y = work(x)
        end.record()
        torch.cuda.synchronize(dev)
        last[:] = [y]
        return start.elapsed_time(end)

    # without warm-up the first, cold forward is timed as the NTIRE ESR organisers do; it is checked after
    times = _timed_runs(p, run)
    if p.warmup == 0:
        out_shape = tuple(last[0].shape)
        if not torch.isfinite(last[0]).all():
            raise TimingError(f"the model's output is not finite in {p.precision} under protocol {p.name!r} "
                              f"(overflow); it is not timed in another precision instead")
    return times, out_shape, torch.cuda.max_memory_allocated(dev) / 2**20


def _measure_engine(model: nn.Module, p: TimingProtocol, dev: torch.device, shape: tuple[int, ...]):
    """An engine protocol: export, build and check once (`engine.build`), then the protocol's warm-up and timed
    runs of the engine alone. CPU: perf_counter around each forward, with the protocol's threads; CUDA: events
    around each forward on the engine's stream (or the wall clock around forward and synchronise)."""
    import psutil

    proc = psutil.Process()
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise TimingError(f"timing protocol {p.name!r} needs CUDA, which is not available; use a CPU protocol")
    gc.collect()
    _trim_heap()
    before = torch.cuda.mem_get_info(dev)[0] if cuda else proc.memory_info().rss
    have_hwm = not cuda and _reset_peak_rss()
    ctx = torch.cuda.device(dev) if cuda else contextlib.nullcontext()
    with ctx:
        built = engines.build(model, p, shape)
        eng = built.engine
        if cuda:
            peak = max(before - torch.cuda.mem_get_info(dev)[0], 0)
        else:
            try:
                peak = max((_peak_rss() if have_hwm else proc.memory_info().rss) - before, 0)
            except OSError:
                peak = max(proc.memory_info().rss - before, 0)
        for _ in range(max(p.warmup - 1, 0)):  # the check's forward was the first warm-up run
            eng.infer()
        if eng.synchronize is not None:
            eng.synchronize()
        if eng.stream is not None:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

            def run() -> tuple[float, None]:
                start.record(eng.stream)
                eng.infer()
                end.record(eng.stream)
                eng.synchronize()
                return start.elapsed_time(end), None
        else:
            def run() -> tuple[float, float | None]:
                cpu0, t0 = time.process_time(), time.perf_counter()
                eng.infer()
                if eng.synchronize is not None:
                    eng.synchronize()
                t1, cpu1 = time.perf_counter(), time.process_time()
                return (t1 - t0) * 1e3, None if cuda else (cpu1 - cpu0) * 1e3

        runs = _timed_runs(p, run)
    times = [r[0] for r in runs]
    cpu_ms = None if cuda else float(np.median([r[1] for r in runs]))
    extra = {"runtime": p.runtime, "engine_build_s": built.build_s,
             "engine_versions": json.dumps(eng.versions, sort_keys=True), "engine_max_abs_err": built.max_abs_err}
    return times, built.output_shape, peak / 2**20, cpu_ms, extra


def measure(
    model: nn.Module,
    protocol: str | TimingProtocol,
    device: str | torch.device | None = None,
    *,
    exclusive: bool = True,
    spec: ArchSpec | None = None,
) -> Timing:
    """Time the (deployed) `model` under `protocol` on `device` (default: the protocol's device kind).

    The input is a seeded uniform [0, 1) tensor of `lr_shape(protocol, spec)`; `spec` defaults to `model.spec`. The
    model is copied before any dtype or memory-format change. Under an engine protocol (`runtime` other than torch) the
    model is exported to ONNX, built into the engine once and checked against PyTorch first (`engine.build`): an export,
    build or check failure raises `EngineError` (a `TimingError`) and nothing is timed. `exclusive` records whether the
    caller held the device alone (docs/architecture.md, "Timing"); a non-exclusive timing is kept but flagged.
    """
    p = get_protocol(protocol)
    spec = spec if spec is not None else getattr(model, "spec", None)
    if not isinstance(spec, ArchSpec):
        raise SrSearchError("measure() needs the ArchSpec for the input size: pass spec=... (the model has no .spec)")
    shape = lr_shape(p, spec)
    dev = _resolve_device(p, device)
    name = device_name(p, dev)
    extra: dict[str, Any] = {}
    if p.engine:
        times, out_shape, peak, cpu_ms, extra = _measure_engine(model, p, dev, shape)
    elif dev.type == "cpu":
        times, out_shape, peak, cpu_ms = _measure_cpu(model, p, shape)
    else:
        times, out_shape, peak, cpu_ms = _measure_cuda(model, p, dev, shape)
    median = float(np.median(times))
    out_pixels = out_shape[0] * out_shape[-2] * out_shape[-1]
    return Timing(
        protocol=p.name, device_name=name, precision=p.precision, batch=p.batch, input_shape=shape,
        output_shape=out_shape, exclusive=exclusive, reps=p.reps, latency_ms=median,
        latency_ms_p90=float(np.percentile(times, 90)), latency_ms_mean=float(np.mean(times)),
        throughput=p.batch * 1e3 / median, mpix_per_s=out_pixels * 1e3 / median / 1e6, peak_mem_mb=peak,
        cpu_ms=cpu_ms, **extra,
    )


def time_spec(
    spec: ArchSpec,
    protocol: str | TimingProtocol,
    device: str | torch.device | None = None,
    cache: TimingCache | None = None,
    *,
    exclusive: bool = True,
    refresh: bool = False,
    deployed: nn.Module | None = None,
) -> tuple[Timing, bool]:
    """Build, reparameterise and time `spec`, reusing a cached timing of the same deployed network.

    Returns (timing, cached). An exclusive request ignores a cached non-exclusive timing; `refresh` always
    re-times and replaces the entry (the exclusive re-timing of the front). `deployed` skips the build.
    """
    p = get_protocol(protocol)
    lr_shape(p, spec)
    name = device_name(p, device)
    key = spec.deploy_key()
    if cache is not None and not refresh:
        hit = cache.get(key, p, name, require_exclusive=exclusive)
        if hit is not None:
            return hit, True
    if deployed is None:
        deployed = deploy_pair(spec)[1]
    timing = measure(deployed, p, device, exclusive=exclusive, spec=spec)
    if cache is not None:
        cache.put(key, p, timing, replace=refresh)
    return timing, False



def protocol_cost(spec: ArchSpec, protocol: str | TimingProtocol, *,
                  models: tuple[nn.Module, nn.Module] | None = None) -> Cost:
    """Parameters and deployed MACs of `spec` for one image at the protocol's LR input size."""
    return cost(spec, lr_shape(get_protocol(protocol), spec), models=models)
