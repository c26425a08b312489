"""The bad-input corpus: malformed gRPC and REST requests, each with its expected status.

Every case is data: a protocol, a target, the exact bytes sent, the headers, and the
status a client must get. Cases start from the load-test request files and differ from a
good request in one way (see ``payloads.py``); cases that a known server bug fails today
carry ``bug`` and run as strict xfails.
"""

from __future__ import annotations

from tests.reliability.corpus_grpc import grpc_cases
from tests.reliability.corpus_rest import rest_cases
from tests.reliability.payloads import (
    MODEL,
    REST_PREDICT,
    Case,
    good_infer,
    good_predict,
    good_rest_predict,
)

__all__ = [
    "CASES",
    "MODEL",
    "REST_PREDICT",
    "Case",
    "good_infer",
    "good_predict",
    "good_rest_predict",
]

CASES: list[Case] = [*grpc_cases(), *rest_cases()]
