"""`Timing`: one measurement of a deployed network under a protocol, and `TimingError` when it cannot be taken."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ...errors import SrSearchError
from ...study.protocols import Precision


class TimingError(SrSearchError):
    """The model could not be timed as the protocol asks (fp16 overflow or unsupported op, out of memory, no GPU)."""


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
    #: where it was measured (the Ray node id when timed inside a study)
    node: str | None = None
    #: what ran the network: torch (eager) or the engine (onnxruntime, openvino, tensorrt)
    runtime: str = "torch"
    #: engine runtimes: seconds to build the engine from the ONNX file (session creation, compilation)
    engine_build_s: float | None = None
    #: engine runtimes: the engine's versions and where it ran, as JSON
    engine_versions: str | None = None
    #: engine runtimes: max abs error of the engine's output against the PyTorch network on the protocol's input
    engine_max_abs_err: float | None = None
