"""REST clients for the gateway's routes (``/v2/...`` OIP and ``/v1/models/...``).

Bodies are the proto3 JSON form of the gRPC messages (REST infer takes that form as well as
the protocol's REST form), so requests are built and replies decoded by the same code as
over gRPC (``pronto._codec``), with bytes as base64.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from google.protobuf import json_format
from google.protobuf.message import Message

from pronto import _codec
from pronto._codec import InferResult, ModelMetadata, PredictResult
from pronto._errors import InferenceError
from pronto._grpc import USER_AGENT, credential_metadata
from pronto._retry import NO_RETRY, RetryPolicy, call_with_retries, call_with_retries_async
from server.generated.inference import grpc_service_pb2 as oip
from server.generated.pronto.v1 import prediction_pb2 as pv1

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AsyncRestClient", "RestClient"]


def _path(model: str, version: str, suffix: str = "") -> str:
    base = f"/v2/models/{quote(model, safe='')}"
    if version:
        base += f"/versions/{quote(version, safe='')}"
    return base + suffix


def _infer_body(request: oip.ModelInferRequest) -> dict[str, Any]:
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    body.pop("model_name", None)  # both travel in the URL
    body.pop("model_version", None)
    return body


def _decode(body: Any, message: Message) -> Any:
    json_format.ParseDict(body, message, ignore_unknown_fields=True)
    return message


def _response(reply: httpx.Response) -> Any:
    try:
        body = reply.json() if reply.content else {}
    except ValueError:
        body = reply.text
    if reply.status_code >= 400:
        raise InferenceError.from_http(reply.status_code, reply.headers, body)
    return body


def _transport_error(exc: httpx.HTTPError) -> InferenceError:
    if isinstance(exc, httpx.TimeoutException):
        return InferenceError("DEADLINE_EXCEEDED", f"{type(exc).__name__}: {exc}")
    return InferenceError("UNAVAILABLE", f"{type(exc).__name__}: {exc}")


class _RestBase:
    def __init__(
        self,
        base_url: str,
        *,
        ca_file: str | Path | None = None,
        api_key: str | None = None,
        api_key_header: str = "x-api-key",
        jwt: str | None = None,
        timeout: float | None = 10.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if "://" not in base_url:
            base_url = f"http://{base_url}"
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        # An https URL is verified against the system's trust store, or ``ca_file``.
        self._verify = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._headers = {"user-agent": USER_AGENT, **dict(headers or {})}
        self._headers.update(credential_metadata(api_key, jwt, api_key_header))
        self._metadata_cache: dict[tuple[str, str], ModelMetadata] = {}

    def _policy(self, retry: bool) -> RetryPolicy:
        return self.retry if retry else NO_RETRY

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout


class RestClient(_RestBase):
    """Blocking REST client for Envoy's routes, on one keep-alive connection pool.

    ``base_url`` is ``http://host:8080`` (or ``https://...``; a bare ``host:port`` means
    http). Other arguments as for :class:`pronto.Client`. Every method raises
    :class:`pronto.InferenceError` on failure, with ``http_status`` set.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, verify=self._verify
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> Any:
        def attempt(remaining: float | None) -> Any:
            try:
                reply = self._http.request(
                    method, path, json=body, timeout=remaining, headers=headers
                )
            except httpx.HTTPError as exc:
                raise _transport_error(exc) from None
            return _response(reply)

        return call_with_retries(attempt, self._policy(retry), self._timeout(timeout))

    def server_live(self, *, timeout: float | None = None) -> bool:
        return bool(self._call("GET", "/v2/health/live", timeout=timeout).get("live"))

    def server_ready(self, *, timeout: float | None = None) -> bool:
        return bool(self._call("GET", "/v2/health/ready", timeout=timeout).get("ready"))

    def model_ready(self, model: str, version: str = "", *, timeout: float | None = None) -> bool:
        return bool(self._call("GET", _path(model, version, "/ready"), timeout=timeout)["ready"])

    def model_metadata(
        self, model: str, version: str = "", *, timeout: float | None = None
    ) -> ModelMetadata:
        body = self._call("GET", _path(model, version), timeout=timeout)
        result = _codec.parse_metadata(_decode(body, oip.ModelMetadataResponse()))
        self._metadata_cache[(model, version)] = result
        return result

    def list_models(self, *, timeout: float | None = None) -> list[pv1.ModelInfo]:
        body = self._call("GET", "/v1/models", timeout=timeout)
        return list(_decode(body, pv1.ListModelsResponse()).models)

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
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> InferResult:
        """``POST /v2/models/{model}[/versions/{v}]/infer``; arguments as :meth:`Client.infer`."""
        md = None
        if _codec._is_frame(inputs):
            md = self._metadata_cache.get((model, version)) or self.model_metadata(model, version)
        request = _codec.build_infer_request(
            model, inputs, version=version, outputs=outputs, request_id=request_id, raw=raw,
            metadata=md,
        )  # fmt: skip
        body = self._call(
            "POST", _path(model, version, "/infer"), _infer_body(request), timeout, headers, retry
        )
        return _codec.parse_infer_response(_decode(body, oip.ModelInferResponse()))

    def predict(
        self,
        model: str,
        instances: Any,
        *,
        version: str = "",
        request_id: str = "",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> PredictResult:
        """``POST /v1/models/{model}:predict``; arguments as :meth:`Client.predict`."""
        body = _codec.predict_body(instances, version=version, request_id=request_id)
        path = f"/v1/models/{quote(model, safe='')}:predict"
        reply = self._call("POST", path, body, timeout, headers, retry)
        return _codec.parse_predict_json(reply)


class AsyncRestClient(_RestBase):
    """The asyncio form of :class:`RestClient` (``httpx.AsyncClient`` underneath)."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, verify=self._verify
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> Any:
        async def attempt(remaining: float | None) -> Any:
            try:
                reply = await self._http.request(
                    method, path, json=body, timeout=remaining, headers=headers
                )
            except httpx.HTTPError as exc:
                raise _transport_error(exc) from None
            return _response(reply)

        return await call_with_retries_async(attempt, self._policy(retry), self._timeout(timeout))

    async def server_live(self, *, timeout: float | None = None) -> bool:
        return bool((await self._call("GET", "/v2/health/live", timeout=timeout)).get("live"))

    async def server_ready(self, *, timeout: float | None = None) -> bool:
        return bool((await self._call("GET", "/v2/health/ready", timeout=timeout)).get("ready"))

    async def model_ready(
        self, model: str, version: str = "", *, timeout: float | None = None
    ) -> bool:
        body = await self._call("GET", _path(model, version, "/ready"), timeout=timeout)
        return bool(body["ready"])

    async def list_models(self, *, timeout: float | None = None) -> list[pv1.ModelInfo]:
        body = await self._call("GET", "/v1/models", timeout=timeout)
        return list(_decode(body, pv1.ListModelsResponse()).models)

    async def model_metadata(
        self, model: str, version: str = "", *, timeout: float | None = None
    ) -> ModelMetadata:
        body = await self._call("GET", _path(model, version), timeout=timeout)
        result = _codec.parse_metadata(_decode(body, oip.ModelMetadataResponse()))
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
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> InferResult:
        """See :meth:`RestClient.infer`."""
        md = None
        if _codec._is_frame(inputs):
            md = self._metadata_cache.get((model, version)) or await self.model_metadata(
                model, version
            )
        request = _codec.build_infer_request(
            model, inputs, version=version, outputs=outputs, request_id=request_id, raw=raw,
            metadata=md,
        )  # fmt: skip
        body = await self._call(
            "POST", _path(model, version, "/infer"), _infer_body(request), timeout, headers, retry
        )
        return _codec.parse_infer_response(_decode(body, oip.ModelInferResponse()))

    async def predict(
        self,
        model: str,
        instances: Any,
        *,
        version: str = "",
        request_id: str = "",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> PredictResult:
        """See :meth:`RestClient.predict`."""
        body = _codec.predict_body(instances, version=version, request_id=request_id)
        path = f"/v1/models/{quote(model, safe='')}:predict"
        reply = await self._call("POST", path, body, timeout, headers, retry)
        return _codec.parse_predict_json(reply)
