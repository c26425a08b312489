"""Label feedback across the pods of one deployment.

Each pod indexes the predictions it served. A caller sends labels to whichever pod its load
balancer picks, so a pod that does not hold a prediction asks its peers: first
``CheckLabels`` on every peer (which of these do you hold, and are their labels valid?), then
``CommitLabels`` on each owner with its share. Nothing is written until every id has an owner
and every label is valid, so a request stays all or nothing unless an owner fails between
the two steps (a retry then completes it: labelling the same rows again is harmless).

Peers are given as ``host:port`` entries; a host may be a DNS name with several addresses,
such as a Kubernetes headless Service listing every ready pod. Names are resolved again when
the last resolution is older than :attr:`FeedbackPeers.resolve_every` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from server.errors import ErrorKind, InvalidInput, PredictionNotFound, ProntoError
from server.generated.pronto.v1 import feedback_pb2 as fpb
from server.generated.pronto.v1 import feedback_peer_pb2 as peer_pb
from server.generated.pronto.v1 import feedback_peer_pb2_grpc as peer_grpc

__all__ = ["FeedbackPeers", "PeersUnavailable"]

log = logging.getLogger(__name__)

Entries = Sequence[tuple[str, Sequence[str]]]


class PeersUnavailable(ProntoError):
    kind = ErrorKind.UNAVAILABLE
    reason = "peers_unavailable"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _request(cls: Any, name: str, entries: Entries) -> Any:
    return cls(
        name=name,
        feedback=[fpb.LabeledPrediction(id=pid, labels=list(labels)) for pid, labels in entries],
    )


class FeedbackPeers:
    """The other pods of this deployment, as far as label feedback is concerned."""

    def __init__(
        self,
        peers: Sequence[tuple[str, int]],
        own: Iterable[str] = (),
        timeout: float = 5.0,
        resolve_every: float = 5.0,
        metrics: Any = None,
    ) -> None:
        self.peers = list(peers)
        #: addresses that are this pod (its own port), never asked
        self.own = set(own)
        self.timeout = timeout
        self.resolve_every = resolve_every
        self.metrics = metrics
        self._addresses: list[str] = []
        #: peer names that did not resolve last time: they may hold what is not found
        self._unresolved = 0
        self._resolved_at = -float("inf")
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def addresses(self) -> list[str]:
        """Every peer address, names resolved (cached for ``resolve_every`` seconds)."""
        now = time.monotonic()
        if now - self._resolved_at < self.resolve_every:
            return self._addresses
        loop = asyncio.get_running_loop()
        found: list[str] = []
        unresolved = 0
        for host, port in self.peers:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("feedback peer %s: cannot resolve (%s)", host, exc)
                unresolved += 1
                continue
            for info in infos:
                address = _address(str(info[4][0]), port)
                if address not in found and address not in self.own:
                    found.append(address)
        self._addresses, self._unresolved, self._resolved_at = found, unresolved, now
        for gone in set(self._channels) - set(found):
            await self._channels.pop(gone).close()
        return found

    def _stub(self, address: str) -> peer_grpc.FeedbackPeerServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return peer_grpc.FeedbackPeerServiceStub(channel)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.peer_calls.labels(outcome).inc()

    async def locate(self, name: str, entries: Entries) -> dict[str, list[tuple[str, Any]]]:
        """Owner address -> its entries, for every entry. Raises NOT_FOUND for an id no
        peer holds, INVALID_ARGUMENT for invalid labels a peer reports, and UNAVAILABLE when
        an id is unaccounted for while some peer did not answer."""
        addresses = await self.addresses()
        request = _request(peer_pb.CheckLabelsRequest, name, entries)
        replies = await asyncio.gather(
            *(self._stub(a).CheckLabels(request, timeout=self.timeout) for a in addresses),
            return_exceptions=True,
        )
        owner: dict[str, str] = {}
        silent = ["(unresolved)"] * self._unresolved
        for address, reply in zip(addresses, replies, strict=True):
            if (
                isinstance(reply, grpc.aio.AioRpcError)
                and reply.code() is grpc.StatusCode.FAILED_PRECONDITION
            ):
                self._count("ok")  # a pod without a capture directory holds nothing
                continue
            if isinstance(reply, BaseException):
                log.warning("feedback peer %s did not answer: %s", address, reply)
                self._count("unreachable")
                silent.append(address)
                continue
            self._count("ok")
            if reply.error:
                raise InvalidInput(reply.error, reply.reason or "feedback")
            for pid in reply.held:
                owner.setdefault(pid, address)
        groups: dict[str, list[tuple[str, Any]]] = {}
        for pid, labels in entries:
            address = owner.get(pid, "")
            if not address:
                if silent:
                    raise PeersUnavailable(
                        f"prediction '{pid}' is not held here, and {len(silent)} peer(s) did "
                        "not answer; retry later"
                    )
                raise PredictionNotFound(
                    f"no prediction '{pid}' of model '{name}' (unknown, or older than the "
                    "label retention)"
                )
            groups.setdefault(address, []).append((pid, labels))
        return groups

    async def commit(self, address: str, name: str, entries: Entries) -> int:
        """Record ``entries`` on their owner; rows labeled."""
        request = _request(peer_pb.CommitLabelsRequest, name, entries)
        try:
            reply = await self._stub(address).CommitLabels(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            self._count("unreachable")
            raise PeersUnavailable(
                f"the pod holding {len(entries)} of these predictions failed to record their "
                f"labels ({exc.code().name}); retry"
            ) from None
        self._count("ok")
        return int(reply.labels)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
