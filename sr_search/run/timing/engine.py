"""Timing a deployed network in a deployment engine (ONNX Runtime, OpenVINO, TensorRT): export once, build once,
check against PyTorch, then time with the protocol's warm-up and repetitions.

The network is exported to ONNX through the one export path (`results.export.write_onnx`, as `sr-search export`)
with the protocol's input shape fixed, as a deployment of one input size would. The engine built from it computes on
the protocol's seeded input, and its output is compared with the PyTorch network's (fp32, same input): a max abs error
above `TimingProtocol.tolerance` (1e-4 fp32, 2e-2 fp16) is an `EngineError` and nothing is timed. Each runtime is a
small module (`ort`, `openvino`, `tensorrt`) with one `build(onnx_path, protocol, x) -> Engine`.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...results.export import write_onnx
from ...study.protocols import TimingProtocol, missing_runtime
from .result import TimingError

__all__ = ["Engine", "EngineError", "Built", "build", "export", "input_tensor", "unsupported_ops"]

#: runtime -> module of this package that builds its engines
_MODULES = {"onnxruntime": "ort", "openvino": "openvino", "tensorrt": "tensorrt"}


class EngineError(TimingError):
    """The deployed network could not be exported, built or reproduced by the engine; `stage` says which."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class Engine:
    """A built engine bound to one input. `infer()` runs one forward (what is timed; on a GPU it only enqueues, the
    caller synchronises); `output()` returns the last output on the host."""

    infer: Callable[[], Any]
    output: Callable[[], np.ndarray]
    versions: dict[str, str]
    #: ops the engine could not take (ran on a fallback device, or not at all), where the runtime reports it
    unsupported: tuple[str, ...] = ()
    #: a CUDA engine: waits for the enqueued forward (None on a CPU)
    synchronize: Callable[[], None] | None = None
    keep: list[Any] = field(default_factory=list, repr=False)
    #: a CUDA engine that runs on a torch stream: timed with CUDA events recorded on it
    stream: Any = None


@dataclass
class Built:
    """An engine checked against PyTorch, with what its row records."""

    engine: Engine
    build_s: float
    max_abs_err: float
    output_shape: tuple[int, ...]


def input_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """The protocol's input: seeded uniform [0, 1) (the torch runtime's values), fp32 on the CPU: an engine gets the
    network exported on the CPU in fp32 and sets its own device and precision."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0), device="cpu", dtype=torch.float32)


def runtime_module(p: TimingProtocol) -> Any:
    missing = missing_runtime(p)
    if missing is not None:
        raise TimingError(missing)
    return importlib.import_module(f"{__package__}.{_MODULES[p.runtime]}")


def export(model: nn.Module, p: TimingProtocol, x: torch.Tensor, folder: Path) -> Path:
    """The network as ONNX at the protocol's input shape (fp32, CPU: the engine sets its own precision)."""
    path = folder / "model.onnx"
    work = _fp32_cpu(model)
    try:
        write_onnx(work, x, path, dynamic=False, opset=p.opset)
    except Exception as exc:  # noqa: BLE001 - an exporter failure of any kind is this network's, recorded on its row
        raise EngineError("export", f"export to ONNX failed (opset {p.opset}): {_first_line(exc)}") from exc
    return path


def build(model: nn.Module, p: TimingProtocol, shape: tuple[int, ...]) -> Built:
    """Export `model`, build the protocol's engine once, and check it against PyTorch on the protocol's input."""
    module = runtime_module(p)
    x = input_tensor(shape)
    with torch.inference_mode():
        expected = _fp32_cpu(model)(x).numpy()
    with tempfile.TemporaryDirectory(prefix="sr-search-engine-") as tmp:
        path = export(model, p, x, Path(tmp))
        try:
            start = time.perf_counter()
            engine = module.build(path, p, x.numpy())
            build_s = time.perf_counter() - start
            engine.infer()
            if engine.synchronize is not None:
                engine.synchronize()
            got = engine.output()
        except TimingError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine's own errors name the op it cannot take
            raise EngineError("build", f"{p.runtime} could not build or run the exported network under protocol "
                                       f"{p.name!r}: {_first_line(exc)}") from exc
    if got.shape != expected.shape:
        raise EngineError("check", f"the {p.runtime} engine's output has shape {got.shape}, the PyTorch network's "
                                   f"{expected.shape}: the export is wrong; not timed")
    err = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0
    if not err <= p.tolerance:
        raise EngineError("check", f"the {p.runtime} engine differs from the PyTorch network under protocol "
                                   f"{p.name!r}: max abs error {err:.3g} > {p.tolerance:g} ({p.precision}); the "
                                   f"export or the engine is wrong, so it is not timed")
    return Built(engine, build_s, err, tuple(got.shape))


def unsupported_ops(model: nn.Module, p: TimingProtocol, shape: tuple[int, ...]) -> str:
    """What `inspect` shows for an engine protocol: the ops the engine could not take, 'all ops' when it takes
    every one, or why the export or build failed."""
    try:
        built = build(model, p, shape)
    except EngineError as exc:
        return f"{exc.stage} failed: {exc}"
    if not built.engine.unsupported:
        return "all ops"
    return "not taken: " + ", ".join(built.engine.unsupported)


def _fp32_cpu(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).eval().requires_grad_(False).to(device="cpu", dtype=torch.float32)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
