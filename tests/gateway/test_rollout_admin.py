"""The rollout admin service answers on the server's own ports, never through the gateway."""

from __future__ import annotations

import grpc
import pytest

from server.generated.pronto.v1 import rollout_pb2 as rpb
from server.generated.pronto.v1 import rollout_pb2_grpc as rpb_grpc
from tests.gateway.harness import Gateway, Server, request
from tests.gateway.modelgen import MODEL

pytestmark = pytest.mark.integration

CALLS = ("GetRollout", "StartRollout", "PromoteRollout", "AbortRollout")


def test_rollout_service_is_not_routed_by_envoy(gateway: Gateway, server: Server) -> None:
    direct = f"127.0.0.1:{server.base_port}"
    with grpc.insecure_channel(direct) as channel:
        status = rpb_grpc.RolloutServiceStub(channel).GetRollout(
            rpb.GetRolloutRequest(name=MODEL), timeout=5
        )
        assert status.rollout.name == MODEL and status.rollout.mode == "off"
    with grpc.insecure_channel(gateway.address) as channel:
        stub = rpb_grpc.RolloutServiceStub(channel)
        calls = {
            "GetRollout": lambda: stub.GetRollout(rpb.GetRolloutRequest(name=MODEL), timeout=5),
            "StartRollout": lambda: stub.StartRollout(
                rpb.StartRolloutRequest(name=MODEL, candidate=1, mode="canary"), timeout=5
            ),
            "PromoteRollout": lambda: stub.PromoteRollout(
                rpb.PromoteRolloutRequest(name=MODEL), timeout=5
            ),
            "AbortRollout": lambda: stub.AbortRollout(
                rpb.AbortRolloutRequest(name=MODEL), timeout=5
            ),
        }
        for name in CALLS:
            with pytest.raises(grpc.RpcError) as caught:
                calls[name]()
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED, name
    # nor as plain HTTP on the gRPC path, nor as a guessed REST path
    for path in ("/pronto.v1.RolloutService/AbortRollout", f"/v1/models/{MODEL}:rollout"):
        reply = request(gateway, "POST", path, {"name": MODEL})
        assert reply.status == 404, reply.body
