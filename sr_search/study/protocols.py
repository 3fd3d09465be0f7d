"""Named timing protocols (docs/architecture.md, "Timing"): what a timing depends on, fixed in a frozen record.

A timing is only worth recording when it is reproducible, so each protocol is a frozen record that fixes everything
the number depends on: device kind, precision, batch, input size, warm-up, repetitions, cudnn.benchmark, memory
format and (CPU) the thread count. Built-in protocols:

- `repsr`: CUDA, fp16, batch 4, output 720x1280 (LR 180x320 at x4, 360x640 at x2; x3 does not divide 1280, so x3
  models need a protocol with an explicit `lr_size`, e.g. `ntire23-x3`).
- `ntire23-x2`, `ntire23-x3`: the NTIRE 2023 real-time 4K SR runtime protocol (the challenge report's): `.half()`
  weights and input, batch 1, cudnn.benchmark, 50 warm-up and 244 timed runs with CUDA events and a synchronise
  after each. The output is 3840x2160 given as **H=3840, W=2160 (portrait)**, exactly as the official demo builds
  its random input (LR 1920x1080 at x2, 1280x720 at x3); the pixel count equals landscape 4K, but kernels whose
  speed depends on orientation can differ, so define a landscape custom protocol to compare. NTIRE reports the
  *mean*; `Timing.latency_ms_mean` is that figure, `latency_ms` the median.
- `ntire26-esr`, `ntire25-esr`: the NTIRE efficient-SR challenge (2026, 2025) as the organisers time it (reference
  section 11): x4, fp32, cudnn.benchmark off, CUDA events around each forward and a synchronise after it, **no
  warm-up** (the cold first image is part of the average, as in the organisers' runs), the mean per image; LR 336x504,
  a DIV2K-valid-sized image divisible by every unshuffle factor. Scored with the year's challenge score (lower is
  better, sr_search/run/challenge.py). `ntire26-esr-warm` / `ntire25-esr-warm`: the same after 20 warm-up forwards.
- `cpu`: fp32, batch 1, LR 108x192 (16:9, divisible by every unshuffle factor 1-4), one pinned thread (the most
  repeatable figure on a shared machine and the same on any core count), 3 warm-up and 20 timed runs. The default
  when CUDA is not available.

The `runtime` field says what runs the deployed network: `torch` (eager PyTorch, the default and what every protocol
above uses), or a deployment engine that gets the network as ONNX: `onnxruntime`, `openvino`, `tensorrt`. The engine's
options that change what is measured (ONNX Runtime's execution provider and graph optimisation level, the ONNX opset,
the precision and threads) are fields of the protocol, so they are part of its fingerprint and of the timing cache's
key. Engine protocols:

- `ort-cpu`: ONNX Runtime, CPU execution provider, fp32, all graph optimisations; the `cpu` protocol's input, threads,
  warm-up and repetitions, so its figures sit next to eager PyTorch's.
- `openvino-cpu`: OpenVINO on the CPU, fp32 (the inference precision is pinned: a CPU with bf16 units would otherwise
  run bf16), the latency hint, the `cpu` protocol's input, threads, warm-up and repetitions.
- `ort-cuda`: ONNX Runtime, CUDA execution provider, fp32, the `repsr` protocol's input (GPU only).
- `trt-fp16`: TensorRT, fp16 engine, the `repsr` protocol's input, warm-up and repetitions (GPU only).

A torch protocol serialises without the engine fields, so its fingerprint (and every cached timing) is what 0.2
wrote.
"""

from __future__ import annotations

import hashlib
import importlib.util
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, SerializationInfo, model_serializer, model_validator

from ..errors import FieldProblem, SrSearchError
from ..model.network import min_input_size
from ..model.spec import ArchSpec
from ..records import Record

__all__ = ["Precision", "Runtime", "RUNTIMES", "TimingProtocol", "PROTOCOLS", "get_protocol", "default_protocol",
           "lr_shape", "missing_runtime"]

Precision = Literal["fp32", "fp16", "bf16"]
Runtime = Literal["torch", "onnxruntime", "openvino", "tensorrt"]
#: runtime -> (the Python package that provides it, the sr-search extra that installs it)
RUNTIMES: dict[str, tuple[str, str] | None] = {
    "torch": None, "onnxruntime": ("onnxruntime", "ort"), "openvino": ("openvino", "openvino"),
    "tensorrt": ("tensorrt", "tensorrt"),
}
#: the engine fields: set (to their defaults) for an engine runtime, absent from a torch protocol
ENGINE_FIELDS = ("provider", "graph_optimization", "opset")
DEFAULT_OPSET = 17
#: an image side in pixels (64K: far beyond 8K video, low enough that a typo is not allocated)
Side = Annotated[int, Field(gt=0, le=65_536)]


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
    lr_size: tuple[Side, Side] | None = None
    hr_size: tuple[Side, Side] | None = None
    scale: Literal[2, 3, 4] | None = None
    warmup: int = Field(10, ge=0, le=10_000)
    reps: int = Field(50, ge=1, le=100_000)
    cudnn_benchmark: bool = False
    channels_last: bool = False
    threads: int | None = Field(None, ge=1, le=1024)
    #: the challenge score rows get under this protocol (sr_search/run/challenge.py)
    score: Literal["ntire23", "ntire25-esr", "ntire26-esr"] | None = None
    #: what runs the deployed network: eager PyTorch, or an engine that gets it as ONNX
    runtime: Runtime = "torch"
    #: onnxruntime only: the execution provider (default: cpu on device cpu, cuda on device cuda)
    provider: Literal["cpu", "cuda", "tensorrt"] | None = None
    #: onnxruntime only: the graph optimisation level (default: all)
    graph_optimization: Literal["disable", "basic", "extended", "all"] | None = None
    #: engine runtimes: the ONNX opset the network is exported with (default 17)
    opset: int | None = Field(None, ge=13, le=21)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("device") == "cpu" and data.get("threads") is None:
            data = {**data, "threads": 1}
        runtime = data.get("runtime", "torch")
        if runtime in ("onnxruntime", "openvino", "tensorrt") and data.get("opset") is None:
            data = {**data, "opset": DEFAULT_OPSET}
        if runtime == "onnxruntime":
            data = {"provider": "cuda" if data.get("device") == "cuda" else "cpu", "graph_optimization": "all",
                    **{k: v for k, v in data.items() if v is not None}}
        if "ntire" in data:  # 0.1's switch for the NTIRE23 score
            data = dict(data)
            if data.pop("ntire") is True and data.get("score") is None:
                data["score"] = "ntire23"
        return data

    @property
    def ntire(self) -> bool:
        """Scored with the NTIRE 2023 real-time score."""
        return self.score == "ntire23"

    @model_validator(mode="after")
    def _check(self) -> TimingProtocol:
        if (self.lr_size is None) == (self.hr_size is None):
            raise FieldProblem("lr_size", f"protocol {self.name!r}: set exactly one of 'lr_size' (LR input H, W) or "
                                          f"'hr_size' (output H, W)")
        if self.device == "cpu" and self.cudnn_benchmark:
            raise FieldProblem("cudnn_benchmark", "applies to device 'cuda' only; got True on 'cpu'")
        if self.device == "cuda" and self.threads is not None:
            raise FieldProblem("threads", f"applies to device 'cpu' only; got {self.threads} on 'cuda'")
        self._check_runtime()
        return self

    def _check_runtime(self) -> None:
        """The engine fields belong to their runtime; an engine takes what it can run."""
        rt = self.runtime
        if rt == "torch":
            for key in ENGINE_FIELDS:
                if getattr(self, key) is not None:
                    raise FieldProblem(key, "applies to an engine runtime (onnxruntime, openvino, tensorrt), not to "
                                            "runtime 'torch'")
            return
        if rt != "onnxruntime":
            for key in ("provider", "graph_optimization"):
                if getattr(self, key) is not None:
                    raise FieldProblem(key, f"applies to runtime 'onnxruntime' only; got {getattr(self, key)!r} "
                                            f"with runtime {rt!r}")
        for key in ("cudnn_benchmark", "channels_last"):
            if getattr(self, key):
                raise FieldProblem(key, f"applies to runtime 'torch' only (the engine chooses its kernels and "
                                        f"memory layout itself); got True with runtime {rt!r}")
        if rt == "tensorrt" and self.device != "cuda":
            raise FieldProblem("device", "runtime 'tensorrt' runs on device 'cuda' only")
        if rt == "openvino" and self.device != "cpu":
            raise FieldProblem("device", "runtime 'openvino' is timed on device 'cpu' here (its GPU plugin is for "
                                         "Intel GPUs, which torch cannot place a network on)")
        if rt == "onnxruntime" and (self.provider == "cpu") != (self.device == "cpu"):
            raise FieldProblem("provider", f"execution provider {self.provider!r} does not run on device "
                                           f"{self.device!r} (cpu runs on cpu; cuda and tensorrt on cuda)")
        allowed = {"tensorrt": ("fp32", "fp16"), "onnxruntime": ("fp32", "fp16") if self.device == "cuda"
                   else ("fp32",), "openvino": ("fp32",)}[rt]
        if self.precision not in allowed:
            raise FieldProblem("precision", f"runtime {rt!r} on {self.device} is timed in {', '.join(allowed)}; got "
                                            f"{self.precision!r}")

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any, info: SerializationInfo) -> dict[str, Any]:
        # a torch protocol dumps (and so fingerprints, and freezes into a study folder) exactly as 0.2 wrote it
        data = handler(self)
        if self.runtime == "torch":
            for key in ("runtime", *ENGINE_FIELDS):
                data.pop(key, None)
        return data

    @property
    def engine(self) -> bool:
        """Timed in a deployment engine (the network exported to ONNX), not in eager PyTorch."""
        return self.runtime != "torch"

    @property
    def tolerance(self) -> float:
        """Max abs error an engine's output may have against the PyTorch network: fp32 rounding, or fp16's."""
        return 1e-4 if self.precision == "fp32" else 2e-2

    def fingerprint(self) -> str:
        """Hash of every field: a cached timing is reused only under an identical protocol."""
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:16]


PROTOCOLS: dict[str, TimingProtocol] = {
    p.name: p
    for p in (
        TimingProtocol(name="repsr", device="cuda", precision="fp16", batch=4, hr_size=(720, 1280), warmup=20,
                       reps=100, cudnn_benchmark=True),
        TimingProtocol(name="ntire23-x2", device="cuda", precision="fp16", batch=1, hr_size=(3840, 2160), scale=2,
                       warmup=50, reps=244, cudnn_benchmark=True, score="ntire23"),
        TimingProtocol(name="ntire23-x3", device="cuda", precision="fp16", batch=1, hr_size=(3840, 2160), scale=3,
                       warmup=50, reps=244, cudnn_benchmark=True, score="ntire23"),
        *(TimingProtocol(name=f"{year}-esr{suffix}", device="cuda", precision="fp32", batch=1, lr_size=(336, 504),
                         scale=4, warmup=warmup, reps=100, cudnn_benchmark=False, score=f"{year}-esr")
          for year in ("ntire26", "ntire25") for suffix, warmup in (("", 0), ("-warm", 20))),
        TimingProtocol(name="cpu", device="cpu", precision="fp32", batch=1, lr_size=(108, 192), warmup=3, reps=20,
                       threads=1),
        TimingProtocol(name="ort-cpu", device="cpu", precision="fp32", batch=1, lr_size=(108, 192), warmup=3,
                       reps=20, threads=1, runtime="onnxruntime", provider="cpu"),
        TimingProtocol(name="openvino-cpu", device="cpu", precision="fp32", batch=1, lr_size=(108, 192), warmup=3,
                       reps=20, threads=1, runtime="openvino"),
        TimingProtocol(name="ort-cuda", device="cuda", precision="fp32", batch=4, hr_size=(720, 1280), warmup=20,
                       reps=100, runtime="onnxruntime", provider="cuda"),
        TimingProtocol(name="trt-fp16", device="cuda", precision="fp16", batch=4, hr_size=(720, 1280), warmup=20,
                       reps=100, runtime="tensorrt"),
    )
}


def missing_runtime(protocol: TimingProtocol) -> str | None:
    """Why `protocol` cannot time on this machine's Python (its runtime's package is not installed), or None."""
    need = RUNTIMES[protocol.runtime]
    if need is None or importlib.util.find_spec(need[0]) is not None:
        return None
    return (f"timing protocol {protocol.name!r} times in {protocol.runtime}, which is not installed: "
            f"pip install 'sr-search[{need[1]}]'")


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
