"""A grpc.aio server whose ModelInfer does no work: the ceiling of Python gRPC.

It forks the same number of processes as Pronto, shares one port with
SO_REUSEPORT and answers every ModelInfer with a constant response, so the
side-by-side comparison shows how close Pronto's per-request work gets to the
bare cost of Python gRPC on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import sys
from typing import Any

from server.event_loop import run_loop

__all__ = ["constant_reply", "main"]


def constant_reply() -> Any:
    """The ModelInferResponse the floor answers every request with."""
    from server.generated.inference import grpc_service_pb2 as pb

    reply = pb.ModelInferResponse(model_name="bare", model_version="1")
    out = reply.outputs.add(name="probabilities", datatype="FP32", shape=[1, 2])
    out.contents.fp32_contents.extend([0.5, 0.5])
    return reply


def _serve(port: int, event_loop: str = "asyncio") -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from server.generated.inference import grpc_service_pb2 as pb
    from server.generated.inference import grpc_service_pb2_grpc as pb_grpc

    reply = constant_reply()

    class Bare(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return reply

        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=True)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name="bare")

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            return pb.ModelMetadataResponse(name="bare")

    async def run() -> None:
        srv = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Bare(), srv)
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, srv)
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
        srv.add_insecure_port(f"127.0.0.1:{port}")
        await srv.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await srv.stop(1)

    run_loop(event_loop, run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=50061)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--event-loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="asyncio (default: the plain grpc.aio floor) or uvloop",
    )
    args = parser.parse_args(argv)
    ctx = mp.get_context("fork")  # fork before any gRPC object exists
    procs = [
        ctx.Process(target=_serve, args=(args.port, args.event_loop)) for _ in range(args.workers)
    ]
    for p in procs:
        p.start()

    def _stop(signum: int, frame: object) -> None:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid or 0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for p in procs:
        p.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
