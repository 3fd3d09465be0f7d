"""OpenVINO engines on the CPU: the ONNX file read by OpenVINO's frontend, compiled for the latency hint, one stream,
the protocol's threads and an inference precision pinned to the protocol's (a CPU with bf16 units would otherwise
compute in bf16 without saying so)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...study.protocols import TimingProtocol
from .engine import Engine

_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def build(path: Path, p: TimingProtocol, x: np.ndarray) -> Engine:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    taken = core.query_model(model, "CPU")
    unsupported = sorted({op.get_type_name() for op in model.get_ops()
                          if op.get_friendly_name() not in taken and op.get_type_name() not in ("Parameter", "Result",
                                                                                                 "Constant")})
    config: dict[str, str] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                              "INFERENCE_PRECISION_HINT": _PRECISION[p.precision]}
    if p.threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(p.threads)
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    data = np.ascontiguousarray(x)
    request.set_input_tensor(ov.Tensor(data, shared_memory=True))

    def infer() -> None:
        request.infer()

    def output() -> np.ndarray:
        return np.array(request.get_output_tensor(0).data, copy=True)

    return Engine(infer, output, {"openvino": ov.get_version(), "device": "CPU"}, tuple(unsupported),
                  keep=[core, compiled, request, data])
