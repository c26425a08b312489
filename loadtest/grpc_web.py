"""gRPC-Web over HTTP/1.1: binary protobuf bodies through Envoy without JSON.

Envoy's ``grpc_web`` filter turns such a request into plain gRPC before any other filter
runs, so it is authenticated, limited, retried and shed like a gRPC call, and answers in
gRPC-Web framing: length-prefixed messages, then one frame (flag 0x80) holding the
trailers as ``name:value`` lines. A reply without messages (an error, a refusal) may carry
``grpc-status`` in its HTTP headers instead ("trailers-only").

Used by the benchmarks (REST rows/s with binary bodies) and the gateway tests.
"""

from __future__ import annotations

import base64
import http.client
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from loadtest.h2load import grpc_frame

__all__ = ["CONTENT_TYPE", "Reply", "call", "decode_text", "grpc_frame", "unframe"]

CONTENT_TYPE = "application/grpc-web+proto"
_TRAILERS = 0x80


def unframe(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """The messages and the trailers of a gRPC-Web response body."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        if pos + 5 > len(body):
            raise ValueError(f"truncated gRPC-Web frame header at byte {pos}")
        flags, size = body[pos], int.from_bytes(body[pos + 1 : pos + 5], "big")
        chunk = body[pos + 5 : pos + 5 + size]
        if len(chunk) != size:
            raise ValueError(f"gRPC-Web frame at byte {pos} holds {len(chunk)} of {size} bytes")
        if flags & _TRAILERS:
            for line in chunk.decode("latin-1").split("\r\n"):
                name, sep, value = line.partition(":")
                if sep:
                    trailers[name.strip().lower()] = value.strip()
        else:
            messages.append(chunk)
        pos += 5 + size
    return messages, trailers


def decode_text(body: bytes) -> bytes:
    """A ``grpc-web-text`` body: base64, possibly several padded pieces back to back
    (Envoy encodes each frame as it goes)."""
    return b"".join(base64.b64decode(piece) for piece in re.findall(rb"[^=]+=*", body.strip()))


@dataclass
class Reply:
    http_status: int
    grpc_status: int
    grpc_message: str
    messages: list[bytes]
    headers: dict[str, str] = field(default_factory=dict)


def call(
    host: str,
    port: int,
    method: str,
    message: bytes,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    """POST one serialized request to ``/package.Service/Method`` as gRPC-Web."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            method,
            body=grpc_frame(message),
            headers={"content-type": CONTENT_TYPE, "x-grpc-web": "1", **(headers or {})},
        )
        response = conn.getresponse()
        body = response.read()
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    messages, trailers = unframe(body)
    status = trailers.get("grpc-status", reply_headers.get("grpc-status"))
    if status is None:
        raise ValueError(f"HTTP {response.status} without grpc-status: {body[:200]!r}")
    text = trailers.get("grpc-message", reply_headers.get("grpc-message", ""))
    # grpc-message is percent-encoded on the wire
    return Reply(response.status, int(status), unquote(text), messages, reply_headers)
