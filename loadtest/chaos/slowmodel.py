"""A genuinely slow ONNX model: the delay is real computation, not a server switch.

A ``Loop`` multiplies a [rows, W] state by one W x W matrix ``iterations`` times, so the
cost per request grows with ``iterations`` while the file stays small (one matrix). The
builder times a short run with ONNX Runtime and scales ``iterations`` to the wanted delay.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pronto_contract import MODEL_FILE

__all__ = ["SLOW_MODEL", "WIDTH", "build_slow_model", "slow_request"]

SLOW_MODEL = "slow"
WIDTH = 256
_INPUT = 8


def _graph(iterations: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w_in = (rng.standard_normal((_INPUT, WIDTH)) / np.sqrt(_INPUT)).astype(np.float32)
    w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["state_in", "w"], ["m"]),
            helper.make_node("Tanh", ["m"], ["state_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, None),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w_in"], ["h0"]),
            helper.make_node("Loop", ["trips", "keep_going", "h0"], ["h"], body=body),
            helper.make_node("ReduceMean", ["h"], ["y"], axes=[1], keepdims=1),
        ],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, _INPUT])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[
            numpy_helper.from_array(w_in, "w_in"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "keep_going"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _seconds_per_run(model: onnx.ModelProto) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # as in the workers
    session = ort.InferenceSession(model.SerializeToString(), opts)
    x = np.ones((1, _INPUT), dtype=np.float32)
    session.run(None, {"x": x})
    # The fastest of several runs in this thread's CPU time (one intra-op thread: the run is
    # on this thread): a run that was preempted on a busy host reads slower, and an average
    # of such runs would scale the model too short to outlast the deadlines it is for.
    runs = []
    for _ in range(7):
        start = time.thread_time()
        session.run(None, {"x": x})
        runs.append(time.thread_time() - start)
    return min(runs)


def build_slow_model(folder: Path, delay_s: float = 0.5) -> float:
    """Write ``model.onnx`` taking about ``delay_s`` per single-row request; returns the
    measured time per run (on an idle CPU; a loaded machine makes it slower)."""
    probe = 200
    per_iteration = _seconds_per_run(_graph(probe)) / probe
    iterations = max(1, round(delay_s / per_iteration))
    model = _graph(iterations)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / MODEL_FILE)
    return per_iteration * iterations


def slow_request(path: Path) -> Path:
    """A ghz data file with one ModelInfer request for the slow model."""
    request = {
        "model_name": SLOW_MODEL,
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1, _INPUT],
                "contents": {"fp32_contents": [0.5] * _INPUT},
            }
        ],
    }
    path.write_text(json.dumps([request]))
    return path


if __name__ == "__main__":
    import sys

    print(f"{build_slow_model(Path(sys.argv[1]), float(sys.argv[2])):.3f} s per request")
