"""TensorRT engines on a CUDA GPU: the ONNX file parsed by TensorRT's parser, built at the protocol's fixed input
shape (fp16 when the protocol says so), input and output in CUDA memory that torch allocates, one forward enqueued on
a stream of its own (timed with CUDA events on that stream, as the torch runtime times its forwards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...study.protocols import TimingProtocol
from .engine import Engine

#: builder workspace (the tactics' scratch memory); SR networks at 720p need far less
WORKSPACE = 1 << 30


def _parse_errors(parser) -> tuple[list[str], list[str]]:  # noqa: ANN001 - a tensorrt.OnnxParser
    """(messages, ops) of the parser's errors."""
    messages, ops = [], []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        messages.append(str(err.desc() if hasattr(err, "desc") else err))
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        if op:
            ops.append(str(op))
    return messages, ops


def build(path: Path, p: TimingProtocol, x: np.ndarray) -> Engine:
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch (TensorRT 10's only mode)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        messages, ops = _parse_errors(parser)
        raise RuntimeError(f"TensorRT's ONNX parser refused the network (ops: {', '.join(ops) or 'not named'}): "
                           + "; ".join(messages[:3]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
    if p.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build an engine for the network (see its log above)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    dev = torch.device("cuda", torch.cuda.current_device())
    x_t = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
    y_t = torch.empty(tuple(context.get_tensor_shape(outputs[0])), device=dev, dtype=torch.float32)
    context.set_tensor_address(inputs[0], x_t.data_ptr())
    context.set_tensor_address(outputs[0], y_t.data_ptr())
    stream = torch.cuda.Stream(dev)

    def infer() -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT's execute_async_v3 failed")

    def output() -> np.ndarray:
        stream.synchronize()
        return y_t.detach().cpu().numpy()

    return Engine(infer, output, {"tensorrt": trt.__version__, "device": torch.cuda.get_device_name(dev)}, (),
                  stream.synchronize, keep=[engine, context, x_t, y_t, stream], stream=stream)
