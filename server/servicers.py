"""gRPC servicers: thin adapters between protobuf messages and :class:`InferenceCore`.

Each method converts the request, awaits the core, converts the reply. Status mapping,
timing and counting happen in :func:`server.status.rpc`.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import grpc

from server import tracing
from server.core import InferenceCore
from server.errors import InvalidInput
from server.features import columns_of
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.model import PLATFORM, ModelHandle, TensorSpec
from server.oip_codec import InferWire, decode_infer, encode_infer_response
from server.oip_json import HEADER_LENGTH, InferReply, metadata_json, parse_infer_body
from server.predict_codec import predict_response
from server.predict_json import HttpBodyReply, JsonReply, parse_predict_body
from server.shedding import queued_at
from server.status import Recorder, rpc, rpc_as

__all__ = ["InferenceServicer", "MetadataReplies", "PredictionServicer"]

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _tensor_metadata(
    spec: TensorSpec, columns: tuple[str, ...] | None = None
) -> pb.ModelMetadataResponse.TensorMetadata:
    meta = pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype.name, shape=spec.shape
    )
    if columns is not None:
        # a packed input: the feature of each column, for clients that build the matrix
        meta.parameters["columns"].string_param = json.dumps(list(columns))
    return meta


class MetadataReplies:
    """``ModelMetadata`` replies, and their REST JSON, shared by the servicers.

    They are immutable per handle and registry snapshot: each is built once, and all are
    forgotten when a reload installs a new snapshot (the versions list changes, and
    unloaded handles must not be kept alive here).
    """

    def __init__(self, core: InferenceCore) -> None:
        self.core = core
        self._replies: dict[int, tuple[ModelHandle, pb.ModelMetadataResponse, list[bytes]]] = {}
        self._snapshot: object = None

    def _entry(
        self, name: str, version: str
    ) -> tuple[ModelHandle, pb.ModelMetadataResponse, list[bytes]]:
        handle = self.core.model(name, version)
        snapshot = self.core.registry.snapshot()
        if snapshot is not self._snapshot:
            self._replies.clear()
            self._snapshot = snapshot
        cached = self._replies.get(id(handle))
        if cached is not None and cached[0] is handle:
            return cached
        reply = pb.ModelMetadataResponse(
            name=handle.name,
            versions=self.core.registry.versions(handle.name),
            platform=PLATFORM,
            inputs=[_tensor_metadata(s, handle.packed.get(s.name)) for s in handle.inputs.values()],
            outputs=[_tensor_metadata(s) for s in handle.outputs.values()],
        )
        entry: tuple[ModelHandle, pb.ModelMetadataResponse, list[bytes]] = (handle, reply, [])
        self._replies[id(handle)] = entry
        return entry

    def reply(self, name: str, version: str) -> pb.ModelMetadataResponse:
        return self._entry(name, version)[1]

    def json(self, name: str, version: str) -> HttpBodyReply:
        handle, reply, text = self._entry(name, version)
        if not text:
            text.append(metadata_json(reply))
        return HttpBodyReply(text[0], handle.name)  # labelled as ModelMetadata's reply is


class _Servicer:
    """What each servicer holds: the core, the request recorder, the largest tensor a
    request may carry, and the metadata replies (shared, so that gRPC and REST callers
    read one cache)."""

    def __init__(
        self,
        core: InferenceCore,
        recorder: Recorder,
        max_elements: int,
        metadata: MetadataReplies | None = None,
    ) -> None:
        self.core = core
        self.recorder = recorder
        self.max_elements = max_elements
        self.metadata = metadata or MetadataReplies(core)


class InferenceServicer(_Servicer, pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` (Open Inference Protocol v2)."""

    @rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> Any:
        return pb.ServerLiveResponse(live=self.core.server_live())

    @rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> Any:
        return pb.ServerReadyResponse(ready=self.core.server_ready())

    @rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> Any:
        return pb.ModelReadyResponse(ready=self.core.model_ready(request.name, request.version))

    @rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> Any:
        name, version, extensions = self.core.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    @rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> Any:
        return self.metadata.reply(request.name, request.version)

    @tracing.traced("ModelInfer")
    @rpc
    async def ModelInfer(self, request: InferWire | pb.ModelInferRequest, context: Context) -> Any:
        metadata = context.invocation_metadata() or ()  # read once: queue stamp, trace context
        if tracing.ENABLED and tracing.recording():
            return await tracing.traced_infer(self, request, queued_at(metadata))
        req = decode_infer(request, self.max_elements, self.core.max_batch_size)
        if self.core.sink is not None and not tracing.ENABLED:
            tracing.note_traceparent(metadata)  # captured payloads carry the caller's trace
        return encode_infer_response(await self.core.infer(req, queued_at(metadata)))


def _model_info(core: InferenceCore, handle: ModelHandle) -> ppb.ModelInfo:
    return ppb.ModelInfo(
        name=handle.name,
        versions=core.registry.versions(handle.name),
        features=[
            ppb.Feature(name=f.name, kind=f.kind, categories=f.categories) for f in handle.features
        ],
        classes=list(handle.classes or ()),
    )


class PredictionServicer(_Servicer, ppb_grpc.PredictionServiceServicer):
    """``pronto.v1.PredictionService``: named features in, labels and probabilities out."""

    @tracing.traced("Predict")
    @rpc
    async def Predict(self, request: ppb.PredictRequest, context: Context) -> Any:
        metadata = context.invocation_metadata() or ()  # read once: queue stamp, trace context
        if self.core.sink is not None and not tracing.ENABLED:
            tracing.note_traceparent(metadata)  # captured payloads carry the caller's trace
        rows: Any = request.instances
        if request.HasField("inputs"):
            if rows:
                raise InvalidInput("send either instances or inputs, not both", "request")
            rows = columns_of(request.inputs)
        result = await self.core.predict(
            request.name, request.version, rows, request.id, queued_at(metadata)
        )
        return predict_response(result)

    @tracing.traced("Predict")
    @rpc_as("Predict")
    async def PredictJson(self, request: ppb.PredictJsonRequest, context: Context) -> Any:
        metadata = context.invocation_metadata() or ()
        if self.core.sink is not None and not tracing.ENABLED:
            tracing.note_traceparent(metadata)
        body = parse_predict_body(request.name, request.body.data)
        result = await self.core.predict(
            request.name, body.version, body.rows, body.id, queued_at(metadata)
        )
        return JsonReply(result)

    @tracing.traced("ModelInfer")
    @rpc_as("ModelInfer")
    async def ModelInferJson(self, request: ppb.ModelInferJsonRequest, context: Context) -> Any:
        metadata = context.invocation_metadata() or ()
        if self.core.sink is not None and not tracing.ENABLED:
            tracing.note_traceparent(metadata)
        header_length = next((v for k, v in metadata if k == HEADER_LENGTH), None)
        body = parse_infer_body(
            request.model_name,
            request.model_version,
            request.body.data,
            header_length if isinstance(header_length, str) else None,
            self.max_elements,
            self.core.max_batch_size,
        )
        reply = InferReply(body, await self.core.infer(body.request, queued_at(metadata)))
        if reply.header_length is not None:
            await context.send_initial_metadata(((HEADER_LENGTH, str(reply.header_length)),))
        return reply

    @rpc_as("ModelMetadata")
    async def ModelMetadataJson(
        self, request: ppb.ModelMetadataJsonRequest, context: Context
    ) -> Any:
        return self.metadata.json(request.name, request.version)

    @rpc
    async def ListModels(self, request: ppb.ListModelsRequest, context: Context) -> Any:
        registry = self.core.registry
        return ppb.ListModelsResponse(
            models=[_model_info(self.core, registry.get(name)) for name in registry.names()]
        )

    @rpc
    async def GetModel(self, request: ppb.GetModelRequest, context: Context) -> Any:
        handle = self.core.model(request.name, request.version)
        return ppb.GetModelResponse(model=_model_info(self.core, handle))
