"""Named timing protocols and `measure(model, protocol, device) -> Timing` (DESIGN 6).

A timing is only worth recording when it is reproducible, so each protocol is a frozen record that fixes everything
the number depends on: device kind, precision, batch, input size, warm-up, repetitions, cudnn.benchmark, memory
format and (CPU) the thread count. Built-in protocols:

- `repsr`: CUDA, fp16, batch 4, output 720x1280 (LR 180x320 at x4, 360x640 at x2; x3 does not divide 1280, so x3
  models need a protocol with an explicit `lr_size`, e.g. `ntire23-x3`).
- `ntire23-x2`, `ntire23-x3`: the NTIRE 2023 real-time 4K SR runtime protocol (reference section 6.2): `.half()`
  weights and input, batch 1, cudnn.benchmark, 50 warm-up and 244 timed runs with CUDA events and a synchronise
  after each. The output is 3840x2160 given as **H=3840, W=2160 (portrait)**, exactly as the official demo builds
  its random input (LR 1920x1080 at x2, 1280x720 at x3); the pixel count equals landscape 4K, but kernels whose
  speed depends on orientation can differ, so define a landscape custom protocol to compare. NTIRE reports the
  *mean*; `Timing.latency_ms_mean` is that figure, `latency_ms` the median.
- `cpu`: fp32, batch 1, LR 108x192 (16:9, divisible by every unshuffle factor 1-4), one pinned thread (the most
  repeatable figure on a shared machine and the same on any core count), 3 warm-up and 20 timed runs. The default when CUDA is not available.

Never time on a GPU shared with other trials (fractional Ray GPUs): the number is contaminated. The caller knows
whether the device was held exclusively and says so with `exclusive`; it is recorded, not guessed.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import platform
import time
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import nn

from .arch import ArchSpec
from .cost import Cost, cost, count_macs, count_params, deploy_pair
from ._record import Record
from .errors import SrSearchError
from .network import min_input_size
from .timing_cache import TimingCache

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TimingProtocol", "Timing", "TimingError", "PROTOCOLS", "get_protocol", "default_protocol", "lr_shape",
    "device_name", "measure", "time_spec", "timing_table", "format_table", "TimingCache", "Cost", "cost",
    "count_params", "count_macs",
]

Precision = Literal["fp32", "fp16", "bf16"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TimingError(SrSearchError):
    """The model could not be timed as the protocol asks (fp16 overflow or unsupported op, out of memory, no GPU)."""


class TimingProtocol(Record):
    """How to time: a frozen record, so two timings under the same protocol are comparable.

    Exactly one of `lr_size` (H, W of the LR input) or `hr_size` (H, W of the output; LR = HR / scale) is set.
    `scale`, when set, restricts the protocol to models of that scale (an NTIRE track). `threads` pins torch's
    intra-op threads on CPU during timing (default 1) and is restored afterwards; it is not allowed on CUDA.
    """


    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")
    device: Literal["cuda", "cpu"]
    precision: Precision = "fp32"
    batch: int = Field(1, ge=1, le=4096)
    lr_size: tuple[PositiveInt, PositiveInt] | None = None
    hr_size: tuple[PositiveInt, PositiveInt] | None = None
    scale: Literal[2, 3, 4] | None = None
    warmup: int = Field(10, ge=0, le=10_000)
    reps: int = Field(50, ge=1, le=100_000)
    cudnn_benchmark: bool = False
    channels_last: bool = False
    threads: int | None = Field(None, ge=1, le=1024)
    ntire: bool = False


    @model_validator(mode="before")
    @classmethod
    def _pin_cpu_threads(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("device") == "cpu" and data.get("threads") is None:
            data = {**data, "threads": 1}
        return data

    @model_validator(mode="after")
    def _check(self) -> TimingProtocol:
        where = f"TimingProtocol {self.name!r}"
        if (self.lr_size is None) == (self.hr_size is None):
            raise SrSearchError(f"{where}: set exactly one of 'lr_size' (LR input H, W) or 'hr_size' (output H, W)")
        if self.device == "cpu" and self.cudnn_benchmark:
            raise SrSearchError(f"{where} field 'cudnn_benchmark': applies to device 'cuda' only; got True on 'cpu'")
        if self.device == "cuda" and self.threads is not None:
            raise SrSearchError(f"{where} field 'threads': applies to device 'cpu' only; got {self.threads} on 'cuda'")
        return self

    def fingerprint(self) -> str:
        """Hash of every field: a cached timing is reused only under an identical protocol."""
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:16]


PROTOCOLS: dict[str, TimingProtocol] = {
    p.name: p
    for p in (
        TimingProtocol(name="repsr", device="cuda", precision="fp16", batch=4, hr_size=(720, 1280), warmup=20,
                       reps=100, cudnn_benchmark=True),
        TimingProtocol(name="ntire23-x2", device="cuda", precision="fp16", batch=1, hr_size=(3840, 2160), scale=2,
                       warmup=50, reps=244, cudnn_benchmark=True, ntire=True),
        TimingProtocol(name="ntire23-x3", device="cuda", precision="fp16", batch=1, hr_size=(3840, 2160), scale=3,
                       warmup=50, reps=244, cudnn_benchmark=True, ntire=True),
        TimingProtocol(name="cpu", device="cpu", precision="fp32", batch=1, lr_size=(108, 192), warmup=3, reps=20,
                       threads=1),
    )
}


def get_protocol(
    name_or_record: str | TimingProtocol, custom: dict[str, TimingProtocol] | None = None
) -> TimingProtocol:
    """A protocol by name (custom ones first, then built-ins), or the record itself."""
    if isinstance(name_or_record, TimingProtocol):
        return name_or_record
    custom = custom or {}
    for key, record in custom.items():
        if record.name != key:
            raise SrSearchError(f"custom timing protocol {key!r} is named {record.name!r}; the names must match")
        if key in PROTOCOLS and record != PROTOCOLS[key]:
            raise SrSearchError(f"custom timing protocol {key!r} redefines the built-in one; choose another name")
    if name_or_record in custom:
        return custom[name_or_record]
    if name_or_record in PROTOCOLS:
        return PROTOCOLS[name_or_record]
    allowed = ", ".join([*PROTOCOLS, *(k for k in custom if k not in PROTOCOLS)])
    raise SrSearchError(f"unknown timing protocol {name_or_record!r}; allowed: {allowed}")


def default_protocol() -> str:
    """'repsr' when CUDA is available, else 'cpu'."""
    return "repsr" if torch.cuda.is_available() else "cpu"


def lr_shape(protocol: str | TimingProtocol, spec: ArchSpec) -> tuple[int, int, int, int]:
    """(batch, colors, h, w) of the LR input `spec` is timed at under `protocol`."""
    p = get_protocol(protocol)
    r = spec.unshuffle
    if p.scale is not None and spec.scale != p.scale:
        raise SrSearchError(f"timing protocol {p.name!r} is for x{p.scale} models; the spec is x{spec.scale}")
    if p.lr_size is not None:
        h, w = p.lr_size
        if h % r or w % r:
            raise SrSearchError(f"timing protocol {p.name!r}: lr_size {h}x{w} is not divisible by the spec's "
                                f"unshuffle={r}")
    else:
        big_h, big_w = p.hr_size
        f = spec.scale * r
        if big_h % f or big_w % f:
            raise SrSearchError(
                f"timing protocol {p.name!r} fixes the output at {big_h}x{big_w}, which is not divisible by "
                f"scale*unshuffle = {spec.scale}*{r}; use a protocol with an 'lr_size'"
                + (" such as ntire23-x3" if spec.scale == 3 and r == 1 else "")
            )
        h, w = big_h // spec.scale, big_w // spec.scale
    smallest = min_input_size(spec)
    if min(h, w) < smallest:
        raise SrSearchError(f"timing protocol {p.name!r}: LR input {h}x{w} is below the {smallest} px the "
                            f"{spec.block!r} network needs")
    return p.batch, spec.colors, h, w


class Timing(BaseModel):
    """One measurement. `latency_ms` is the median wall time of one forward of the protocol's whole batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: str
    device_name: str
    precision: Precision
    batch: int
    input_shape: tuple[int, int, int, int]
    output_shape: tuple[int, int, int, int]
    exclusive: bool
    reps: int
    latency_ms: float
    latency_ms_p90: float
    latency_ms_mean: float
    #: images per second at the protocol's batch
    throughput: float
    #: output megapixels per second
    mpix_per_s: float
    #: CUDA: max_memory_allocated during the timed runs (weights, input and activations). CPU: growth of the peak
    #: resident set during the first forward, after returning freed heap to the OS; approximate (+-20 %)
    peak_mem_mb: float
    #: CPU only: median CPU time of one forward (the timing thread's when threads=1, else the whole process's).
    #: With one thread it matches latency_ms on an idle core; latency_ms well above it means the core was shared.
    cpu_ms: float | None = None


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
            work, x = _prepare(model, p, dev, shape)
            out_shape = tuple(_checked_forward(work, x, p).shape)  # also the first warm-up run
            for _ in range(max(p.warmup - 1, 0)):
                work(x)
            torch.cuda.synchronize(dev)
            # peak over steady-state runs only: cudnn.benchmark's autotuning workspaces are a warm-up cost
            torch.cuda.reset_peak_memory_stats(dev)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

            def run() -> float:
                start.record()
                work(x)
                end.record()
                torch.cuda.synchronize(dev)
                return start.elapsed_time(end)

            times = _timed_runs(p, run)
            peak = torch.cuda.max_memory_allocated(dev) / 2**20
            del work, x
    except torch.OutOfMemoryError as exc:
        raise TimingError(f"out of memory on {dev} under protocol {p.name!r} (batch {p.batch}, input "
                          f"{tuple(shape)})") from exc
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
    torch.cuda.empty_cache()
    return times, out_shape, peak, None


def measure(
    model: nn.Module,
    protocol: str | TimingProtocol,
    device: str | torch.device | None = None,
    *,
    exclusive: bool = True,
    spec: ArchSpec | None = None,
) -> Timing:
    """Time the (deployed) `model` under `protocol` on `device` (default: the protocol's device kind).

    The input is a seeded uniform [0, 1) tensor of `lr_shape(protocol, spec)`; `spec` defaults to `model.spec`.
    The model is copied before any dtype or memory-format change. `exclusive` records whether the caller held the
    device alone (DESIGN 6); a non-exclusive timing is kept but flagged.
    """
    p = get_protocol(protocol)
    spec = spec if spec is not None else getattr(model, "spec", None)
    if not isinstance(spec, ArchSpec):
        raise SrSearchError("measure() needs the ArchSpec for the input size: pass spec=... (the model has no .spec)")
    shape = lr_shape(p, spec)
    dev = _resolve_device(p, device)
    name = device_name(p, dev)
    if dev.type == "cpu":
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
        cpu_ms=cpu_ms,
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


TABLE_COLUMNS = ["name", "params_train", "params_deploy", "gmacs", "latency_ms", "latency_ms_p90", "throughput",
                 "mpix_per_s", "peak_mem_mb", "cached", "error"]


def timing_table(
    specs: dict[str, ArchSpec],
    protocol: str | TimingProtocol,
    device: str | torch.device | None = None,
    *,
    cache: TimingCache | None = None,
    exclusive: bool = True,
) -> pd.DataFrame:
    """One row per named spec: parameters, deployed GMACs (one image), latency, throughput and memory.

    Every spec's input size is checked before anything is timed. A model that cannot be timed (fp16 overflow,
    out of memory) gets its reason in `error` and empty timings; bad input raises `SrSearchError`.
    The frame's `attrs` carry the protocol and device name.
    """
    import pandas as pd

    p = get_protocol(protocol)
    if not specs:
        raise SrSearchError("timing_table: no models given; name presets or pass ArchSpec JSON")
    for spec in specs.values():
        lr_shape(p, spec)
    where = device_name(p, device)  # fails here, not per row, when the device is missing
    rows = []
    for label, spec in specs.items():
        model, deployed = deploy_pair(spec)
        size = cost(spec, p, models=(model, deployed))
        row: dict[str, Any] = {"name": label, "params_train": size.params_train,
                               "params_deploy": size.params_deploy, "gmacs": size.gmacs, "error": None}
        try:
            timing, cached = time_spec(spec, p, device, cache, exclusive=exclusive, deployed=deployed)
            row.update(latency_ms=timing.latency_ms, latency_ms_p90=timing.latency_ms_p90,
                       throughput=timing.throughput, mpix_per_s=timing.mpix_per_s, peak_mem_mb=timing.peak_mem_mb,
                       cached=cached)
        except TimingError as exc:
            row["error"] = str(exc)
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    df.attrs.update(protocol=p.name, device_name=where, precision=p.precision, batch=p.batch,
                    input_shape=lr_shape(p, next(iter(specs.values()))))
    return df


def format_table(df: pd.DataFrame) -> str:
    """The table as aligned text, with a header line naming the protocol and device when known."""
    import pandas as pd

    def num(fmt: str) -> Callable[[Any], str]:
        return lambda v: "-" if pd.isna(v) else format(v, fmt)

    formats = {"params_train": num(",.0f"), "params_deploy": num(",.0f"), "gmacs": num(".3f"),
               "latency_ms": num(".2f"), "latency_ms_p90": num(".2f"), "throughput": num(".1f"),
               "mpix_per_s": num(".2f"), "peak_mem_mb": num(".1f"), "cached": lambda v: "-" if pd.isna(v) else
               ("yes" if v else "no")}
    shown = df.drop(columns=["error"]) if "error" in df and df["error"].isna().all() else df
    headers = {"params_train": "params (train)", "params_deploy": "params (deploy)", "gmacs": "GMACs",
               "latency_ms": "median ms", "latency_ms_p90": "p90 ms", "throughput": "images/s",
               "mpix_per_s": "Mpix/s", "peak_mem_mb": "peak MB"}
    text = shown.rename(columns=headers).to_string(
        index=False, formatters={headers.get(k, k): f for k, f in formats.items()}, na_rep="-")
    a = df.attrs
    if a.get("protocol"):
        head = (f"protocol {a['protocol']} ({a['precision']}, batch {a['batch']}, LR input "
                f"{a['input_shape'][-2]}x{a['input_shape'][-1]}) on {a['device_name']}")
        return head + "\n" + text
    return text
