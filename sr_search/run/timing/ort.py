"""ONNX Runtime engines: an `InferenceSession` on the protocol's execution provider, graph optimisation level and
threads; the input and output bound once (I/O binding), so a timed forward is the session's run only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...study.protocols import TimingProtocol
from .engine import Engine

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def build(path: Path, p: TimingProtocol, x: np.ndarray) -> Engine:
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel
    so = ort.SessionOptions()
    so.graph_optimization_level = {"disable": level.ORT_DISABLE_ALL, "basic": level.ORT_ENABLE_BASIC,
                                   "extended": level.ORT_ENABLE_EXTENDED, "all": level.ORT_ENABLE_ALL}[
        p.graph_optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if p.threads is not None:
        so.intra_op_num_threads = p.threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0" if p.threads == 1 else "1")
    provider = PROVIDERS[p.provider]
    options: dict[str, str] = {}
    if p.provider == "tensorrt":
        options = {"trt_fp16_enable": "True" if p.precision == "fp16" else "False"}
    if p.provider != "cpu" and provider not in ort.get_available_providers():
        raise RuntimeError(f"ONNX Runtime here has no {provider} (it has {', '.join(ort.get_available_providers())});"
                           f" install onnxruntime-gpu")
    providers = [(provider, options), "CPUExecutionProvider"] if p.provider != "cpu" else [provider]
    session = ort.InferenceSession(str(path), so, providers=providers)
    device = "cpu" if p.provider == "cpu" else "cuda"
    binding = session.io_binding()
    x_value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, 0)
    binding.bind_ortvalue_input(session.get_inputs()[0].name, x_value)
    binding.bind_output(session.get_outputs()[0].name, device)
    synchronize = None
    if device == "cuda":
        binding.synchronize_inputs()
        synchronize = binding.synchronize_outputs

    def infer() -> None:
        session.run_with_iobinding(binding)

    def output() -> np.ndarray:
        return binding.copy_outputs_to_cpu()[0]

    fallback = sorted({node.op_type for sub in session.get_provider_graph_assignment_info()
                       if sub.ep_name != provider for node in sub.get_nodes()})
    return Engine(infer, output, {"onnxruntime": ort.__version__, "provider": provider}, tuple(fallback),
                  synchronize, keep=[session, binding, x_value])
