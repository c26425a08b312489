"""CPU cost of decoding the load-test requests, in-process, no gRPC.

    python -m loadtest.decode_cost [--data-dir loadtest/data] [--rounds 25]

Decodes the first single-row and the first 256-row OIP request of the load data,
in tritonclient's raw form and in typed form, and splits their raw BYTES tensors
with the element-by-element parser and with the request path's splitter. Variants
alternate within each round and the best round counts, timed in process CPU time,
so a busy machine skews them alike.
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


def measure(data_dir: Path, rounds: int) -> str:
    """A markdown table of µs per call."""
    from google.protobuf import json_format

    from loadtest.h2load import raw_request_from_json
    from server.datatypes import decode_bytes_raw, split_bytes_raw
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

    def split_all(fn: Callable[[bytes, int], list[bytes]]) -> Callable[[], list[list[bytes]]]:
        return lambda: [fn(s, 256) for s in strings]

    cases: dict[str, tuple[Callable[[], Any], int]] = {
        "decode raw, 1 row": (lambda: decode_infer_request(raw1, big, big), 2000),
        "decode typed, 1 row": (lambda: decode_infer_request(typed1, big, big), 2000),
        "decode raw, 256 rows": (lambda: decode_infer_request(raw256, big, big), 40),
        "decode typed, 256 rows": (lambda: decode_infer_request(typed256, big, big), 40),
        f"split {len(strings)} raw BYTES tensors of 256, plain parser": (
            split_all(decode_bytes_raw),
            40,
        ),
        f"split {len(strings)} raw BYTES tensors of 256, request path": (
            split_all(split_bytes_raw),
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
