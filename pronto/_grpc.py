"""gRPC clients (blocking and asyncio) for the Open Inference Protocol and Predict."""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from pronto import _codec
from pronto._codec import InferResult, ModelMetadata, PredictResult
from pronto._errors import InferenceError, hint_from_grpc_metadata
from pronto._retry import NO_RETRY, RetryPolicy, call_with_retries, call_with_retries_async
from server.generated.inference import grpc_service_pb2 as oip
from server.generated.inference import grpc_service_pb2_grpc as oip_grpc
from server.generated.pronto.v1 import prediction_pb2 as pv1
from server.generated.pronto.v1 import prediction_pb2_grpc as pv1_grpc

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AsyncClient", "Client"]

USER_AGENT = "pronto-client/0.1.0"
Metadata = Sequence[tuple[str, str]]


def system_roots() -> bytes | None:
    """The operating system's CA bundle, or None to use gRPC's bundled roots."""
    cafile = ssl.get_default_verify_paths().cafile
    return Path(cafile).read_bytes() if cafile and Path(cafile).is_file() else None


def credential_metadata(
    api_key: str | None, jwt: str | None, api_key_header: str
) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    if api_key:
        pairs.append((api_key_header.lower(), api_key))
    if jwt:
        pairs.append(("authorization", f"Bearer {jwt}"))
    return tuple(pairs)


def _error(exc: grpc.RpcError) -> InferenceError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    name = code.name if code is not None else "UNKNOWN"
    return InferenceError(name, details or "", retry_after=hint_from_grpc_metadata(trailers))


class _Base:
    """Settings shared by the blocking and the asyncio client."""

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        ca_file: str | Path | None = None,
        server_name: str | None = None,
        api_key: str | None = None,
        api_key_header: str = "x-api-key",
        jwt: str | None = None,
        timeout: float | None = 10.0,
        retry: RetryPolicy | None = None,
        connections: int = 1,
        metadata: Metadata = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.target = target
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self._metadata = (*credential_metadata(api_key, jwt, api_key_header), *metadata)
        self._credentials: grpc.ChannelCredentials | None = None
        if tls or ca_file:
            roots = Path(ca_file).read_bytes() if ca_file else system_roots()
            self._credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        opts: list[tuple[str, Any]] = [
            ("grpc.primary_user_agent", USER_AGENT),
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
        ]
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        if connections > 1:
            # Without a private pool, channels with equal arguments share one connection.
            opts.append(("grpc.use_local_subchannel_pool", 1))
        self._options = [*opts, *options]
        self._connections = connections
        self._metadata_cache: dict[tuple[str, str], ModelMetadata] = {}

    def _call_metadata(self, extra: Metadata | None) -> Metadata:
        return (*self._metadata, *extra) if extra else self._metadata

    def _policy(self, retry: bool) -> RetryPolicy:
        return self.retry if retry else NO_RETRY

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout


class Client(_Base):
    """Blocking gRPC client; one set of connections, reused by every call.

    ``target`` is ``host:port`` of ``pronto serve`` (or of Envoy, which speaks gRPC on its
    REST port too). ``tls=True`` verifies the server against the system roots, ``ca_file``
    against that CA instead; ``server_name`` overrides the name checked in the certificate.
    ``api_key`` is sent in ``api_key_header``, ``jwt`` as ``authorization: Bearer``.
    ``timeout`` is each call's deadline in seconds, retries included; ``connections > 1``
    opens that many HTTP/2 connections and spreads calls over them (the server's shared
    port balances connections, not calls, over its workers).

    Every method raises :class:`pronto.InferenceError` on failure.
    """

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._channels = [self._channel() for _ in range(self._connections)]
        self._oip = itertools.cycle([oip_grpc.GRPCInferenceServiceStub(c) for c in self._channels])
        self._pv1 = itertools.cycle([pv1_grpc.PredictionServiceStub(c) for c in self._channels])

    def _channel(self) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(self.target, options=self._options)
        return grpc.secure_channel(self.target, self._credentials, options=self._options)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(
        self,
        method: Callable[..., Any],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        retry: bool = True,
    ) -> Any:
        md = self._call_metadata(metadata)

        def attempt(remaining: float | None) -> Any:
            try:
                return method(request, timeout=remaining, metadata=md)
            except grpc.RpcError as exc:
                raise _error(exc) from None

        return call_with_retries(attempt, self._policy(retry), self._timeout(timeout))

    # --- health and metadata -------------------------------------------------------------

    def server_live(self, *, timeout: float | None = None) -> bool:
        stub = next(self._oip)
        return bool(self._unary(stub.ServerLive, oip.ServerLiveRequest(), timeout, None).live)

    def server_ready(self, *, timeout: float | None = None) -> bool:
        stub = next(self._oip)
        return bool(self._unary(stub.ServerReady, oip.ServerReadyRequest(), timeout, None).ready)

    def model_ready(self, model: str, version: str = "", *, timeout: float | None = None) -> bool:
        request = oip.ModelReadyRequest(name=model, version=version)
        return bool(self._unary(next(self._oip).ModelReady, request, timeout, None).ready)

    def server_metadata(self, *, timeout: float | None = None) -> dict[str, Any]:
        reply = self._unary(
            next(self._oip).ServerMetadata, oip.ServerMetadataRequest(), timeout, None
        )
        return {"name": reply.name, "version": reply.version, "extensions": list(reply.extensions)}

    def model_metadata(
        self, model: str, version: str = "", *, timeout: float | None = None
    ) -> ModelMetadata:
        request = oip.ModelMetadataRequest(name=model, version=version)
        result = _codec.parse_metadata(
            self._unary(next(self._oip).ModelMetadata, request, timeout, None)
        )
        self._metadata_cache[(model, version)] = result
        return result

    def list_models(self, *, timeout: float | None = None) -> list[pv1.ModelInfo]:
        reply = self._unary(next(self._pv1).ListModels, pv1.ListModelsRequest(), timeout, None)
        return list(reply.models)

    def get_model(self, model: str, version: str = "", *, timeout: float | None = None) -> Any:
        request = pv1.GetModelRequest(name=model, version=version)
        return self._unary(next(self._pv1).GetModel, request, timeout, None).model

    # --- inference ------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any] | pd.DataFrame,
        *,
        version: str = "",
        outputs: Sequence[str] | None = None,
        request_id: str = "",
        raw: bool = True,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        retry: bool = True,
    ) -> InferResult:
        """OIP ``ModelInfer``. ``inputs`` maps input names to arrays, or is a DataFrame
        whose columns are the model's inputs (its metadata is fetched once and cached to
        type them). ``raw`` sends ``raw_input_contents`` (fastest); ``raw=False`` the typed
        ``contents`` fields."""
        md = None
        if _codec._is_frame(inputs):
            md = self._metadata_cache.get((model, version)) or self.model_metadata(model, version)
        request = _codec.build_infer_request(
            model, inputs, version=version, outputs=outputs, request_id=request_id, raw=raw,
            metadata=md,
        )  # fmt: skip
        return self.infer_request(request, timeout=timeout, metadata=metadata, retry=retry)

    def infer_request(
        self,
        request: oip.ModelInferRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        retry: bool = True,
    ) -> InferResult:
        """``ModelInfer`` with a request message built by the caller."""
        reply = self._unary(next(self._oip).ModelInfer, request, timeout, metadata, retry)
        return _codec.parse_infer_response(reply)

    def predict(
        self,
        model: str,
        instances: Any,
        *,
        version: str = "",
        request_id: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
        retry: bool = True,
    ) -> PredictResult:
        """Named-feature ``Predict``: ``instances`` is a DataFrame, one mapping of feature
        name to value, a sequence of them, or a mapping of feature name to a list of
        values (the columnar form, like a DataFrame)."""
        request = _codec.build_predict_request(
            model, instances, version=version, request_id=request_id
        )
        reply = self._unary(next(self._pv1).Predict, request, timeout, metadata, retry)
        return _codec.parse_predict_response(reply)


class AsyncClient(_Base):
    """The asyncio form of :class:`Client`: same arguments, same methods, awaited.

    Channels open on first use, inside the running event loop; ``await client.close()``
    (or ``async with``) closes them.
    """

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._channels: list[grpc.aio.Channel] = []
        self._oip: Any = None
        self._pv1: Any = None

    def _open(self) -> None:
        for _ in range(self._connections):
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            self._channels.append(channel)
        self._oip = itertools.cycle([oip_grpc.GRPCInferenceServiceStub(c) for c in self._channels])
        self._pv1 = itertools.cycle([pv1_grpc.PredictionServiceStub(c) for c in self._channels])

    def _stub(self, kind: str) -> Any:
        if not self._channels:
            self._open()
        return next(self._oip if kind == "oip" else self._pv1)

    async def close(self) -> None:
        channels, self._channels = self._channels, []
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(
        self,
        kind: str,
        name: str,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        retry: bool = True,
    ) -> Any:
        md = self._call_metadata(metadata)

        async def attempt(remaining: float | None) -> Any:
            method = getattr(self._stub(kind), name)
            try:
                return await method(request, timeout=remaining, metadata=md)
            except grpc.RpcError as exc:
                raise _error(exc) from None

        return await call_with_retries_async(attempt, self._policy(retry), self._timeout(timeout))

    async def server_live(self, *, timeout: float | None = None) -> bool:
        reply = await self._unary("oip", "ServerLive", oip.ServerLiveRequest(), timeout, None)
        return bool(reply.live)

    async def server_ready(self, *, timeout: float | None = None) -> bool:
        reply = await self._unary("oip", "ServerReady", oip.ServerReadyRequest(), timeout, None)
        return bool(reply.ready)

    async def model_ready(
        self, model: str, version: str = "", *, timeout: float | None = None
    ) -> bool:
        request = oip.ModelReadyRequest(name=model, version=version)
        return bool((await self._unary("oip", "ModelReady", request, timeout, None)).ready)

    async def server_metadata(self, *, timeout: float | None = None) -> dict[str, Any]:
        request = oip.ServerMetadataRequest()
        reply = await self._unary("oip", "ServerMetadata", request, timeout, None)
        return {"name": reply.name, "version": reply.version, "extensions": list(reply.extensions)}

    async def list_models(self, *, timeout: float | None = None) -> list[pv1.ModelInfo]:
        reply = await self._unary("pv1", "ListModels", pv1.ListModelsRequest(), timeout, None)
        return list(reply.models)

    async def get_model(
        self, model: str, version: str = "", *, timeout: float | None = None
    ) -> Any:
        request = pv1.GetModelRequest(name=model, version=version)
        return (await self._unary("pv1", "GetModel", request, timeout, None)).model

    async def model_metadata(
        self, model: str, version: str = "", *, timeout: float | None = None
    ) -> ModelMetadata:
        request = oip.ModelMetadataRequest(name=model, version=version)
        reply = await self._unary("oip", "ModelMetadata", request, timeout, None)
        result = _codec.parse_metadata(reply)
        self._metadata_cache[(model, version)] = result
        return result

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any] | pd.DataFrame,
        *,
        version: str = "",
        outputs: Sequence[str] | None = None,
        request_id: str = "",
        raw: bool = True,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        retry: bool = True,
    ) -> InferResult:
        """See :meth:`Client.infer`."""
        md = None
        if _codec._is_frame(inputs):
            md = self._metadata_cache.get((model, version)) or await self.model_metadata(
                model, version
            )
        request = _codec.build_infer_request(
            model, inputs, version=version, outputs=outputs, request_id=request_id, raw=raw,
            metadata=md,
        )  # fmt: skip
        return await self.infer_request(request, timeout=timeout, metadata=metadata, retry=retry)

    async def infer_request(
        self,
        request: oip.ModelInferRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        retry: bool = True,
    ) -> InferResult:
        """See :meth:`Client.infer_request`."""
        reply = await self._unary("oip", "ModelInfer", request, timeout, metadata, retry)
        return _codec.parse_infer_response(reply)

    async def predict(
        self,
        model: str,
        instances: Any,
        *,
        version: str = "",
        request_id: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
        retry: bool = True,
    ) -> PredictResult:
        """See :meth:`Client.predict`."""
        request = _codec.build_predict_request(
            model, instances, version=version, request_id=request_id
        )
        reply = await self._unary("pv1", "Predict", request, timeout, metadata, retry)
        return _codec.parse_predict_response(reply)
