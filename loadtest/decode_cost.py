"""CPU cost of decoding the load-test requests, in-process, no gRPC.

    python -m loadtest.decode_cost [--data-dir loadtest/data] [--rounds 25]

Decodes the first single-row and the first 256-row OIP request of the load data,
in tritonclient's raw form and in typed form, and splits their raw BYTES tensors
with the element-by-element parser, the bytes splitter, and the text splitter one tensor
at a time and all at once (the request path). Variants alternate within each round and
the best round counts, timed in process CPU time, so a busy machine skews them alike. A
synthetic wide numeric request (30 FP32 columns) is decoded as 30 ``[1, 1]`` tensors and as
one ``[1, 30]`` tensor: the two request forms a trainer could export a wide numeric model
for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]


def _best(cases: dict[str, tuple[Callable[[], Any], int]], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, (fn, number) in cases.items():
            t = timeit.timeit(fn, number=number, timer=time.process_time) / number
            best[name] = min(best[name], t)
    return best


def _wide(columns: int, one_tensor: bool) -> Any:
    import numpy as np

    from server.generated.inference import grpc_service_pb2 as pb

    req = pb.ModelInferRequest(model_name="wide")
    values = np.arange(columns, dtype="<f4") / 7
    if one_tensor:
        req.inputs.add(name="numeric", datatype="FP32", shape=[1, columns])
        req.raw_input_contents.append(values.tobytes())
    else:
        for i, v in enumerate(values):
            req.inputs.add(name=f"x{i:02d}", datatype="FP32", shape=[1, 1])
            req.raw_input_contents.append(v.tobytes())
    return req


def _wide_sessions(columns: int) -> tuple[Any, Any]:
    """ONNX Runtime sessions of one linear scorer taking the columns as separate [N, 1]
    inputs (concatenated in the graph, as the trainer's per-column export does) or as one
    [N, k] input."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(
        np.linspace(-1, 1, columns, dtype=np.float32).reshape(-1, 1), "w"
    )
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])

    def session(inputs: list[Any], nodes: list[Any], first: str) -> Any:
        nodes = [*nodes, helper.make_node("MatMul", [first, "w"], ["m"])]
        nodes.append(helper.make_node("Sigmoid", ["m"], ["score"]))
        graph = helper.make_graph(nodes, "wide", inputs, [out], [weights])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])

    names = [f"x{i:02d}" for i in range(columns)]
    many = session(
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in names],
        [helper.make_node("Concat", names, ["all"], axis=1)],
        "all",
    )
    one = session(
        [helper.make_tensor_value_info("numeric", TensorProto.FLOAT, [None, columns])],
        [],
        "numeric",
    )
    return many, one


def measure(data_dir: Path, rounds: int) -> str:
    """A markdown table of µs per call."""
    from google.protobuf import json_format

    from loadtest.h2load import raw_request_from_json
    from server.datatypes import decode_bytes_raw, frame_texts, split_bytes_raw, split_text_raw
    from server.generated.inference import grpc_service_pb2 as pb
    from server.oip_codec import decode_infer_request

    single = json.loads((data_dir / "oip.json").read_text())[0]
    batch = json.loads((data_dir / "oip_b256.json").read_text())[0]
    raw1, raw256 = raw_request_from_json(single), raw_request_from_json(batch)
    typed1 = json_format.ParseDict(single, pb.ModelInferRequest())
    typed256 = json_format.ParseDict(batch, pb.ModelInferRequest())
    strings = [
        raw256.raw_input_contents[i] for i, t in enumerate(raw256.inputs) if t.datatype == "BYTES"
    ]
    big = 1 << 24
    wide_many, wide_one = _wide(30, one_tensor=False), _wide(30, one_tensor=True)
    ort_many, ort_one = _wide_sessions(30)
    feeds_many = {t.name: t.data for t in decode_infer_request(wide_many, big, big).inputs}
    feeds_one = {t.name: t.data for t in decode_infer_request(wide_one, big, big).inputs}

    def split_all(fn: Callable[[bytes, int], list[Any]]) -> Callable[[], list[list[Any]]]:
        return lambda: [fn(s, 256) for s in strings]

    cases: dict[str, tuple[Callable[[], Any], int]] = {
        "decode raw, 1 row": (lambda: decode_infer_request(raw1, big, big), 2000),
        "decode typed, 1 row": (lambda: decode_infer_request(typed1, big, big), 2000),
        "decode raw, 256 rows": (lambda: decode_infer_request(raw256, big, big), 40),
        "decode typed, 256 rows": (lambda: decode_infer_request(typed256, big, big), 40),
        "decode raw, 30 FP32 inputs of [1, 1]": (
            lambda: decode_infer_request(wide_many, big, big),
            1000,
        ),
        "decode raw, one FP32 input of [1, 30]": (
            lambda: decode_infer_request(wide_one, big, big),
            2000,
        ),
        "ONNX Runtime, linear scorer, 30 inputs of [1, 1]": (
            lambda: ort_many.run(None, feeds_many),
            1000,
        ),
        "ONNX Runtime, linear scorer, one input of [1, 30]": (
            lambda: ort_one.run(None, feeds_one),
            2000,
        ),
        f"split {len(strings)} raw BYTES tensors of 256, plain parser": (
            split_all(decode_bytes_raw),
            40,
        ),
        f"split {len(strings)} raw BYTES tensors of 256, bytes splitter": (
            split_all(split_bytes_raw),
            40,
        ),
        f"split {len(strings)} raw BYTES tensors of 256, one by one (decoded text)": (
            split_all(split_text_raw),
            40,
        ),
        f"split {len(strings)} raw BYTES tensors of 256 at once, request path": (
            lambda: frame_texts(strings, [256] * len(strings)),
            40,
        ),
    }
    best = _best(cases, rounds)
    lines = ["| operation | µs per call (best round) |", "| --- | ---: |"]
    lines += [f"| {name} | {t * 1e6:.1f} |" for name, t in best.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("loadtest/data"))
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    print(measure(args.data_dir, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
