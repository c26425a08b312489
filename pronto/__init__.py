"""Pronto client: gRPC (blocking and asyncio) and REST access to a Pronto server.

>>> import pronto
>>> with pronto.Client("localhost:50051") as client:              # doctest: +SKIP
...     result = client.predict("flight-delay", {"OPERA": "Sky Airline", "MES": 7})
...     result.labels

Installs with the ``client`` extra; imports neither ONNX Runtime nor any server setting.
"""

from pronto._codec import (
    InferResult,
    ModelMetadata,
    Prediction,
    PredictResult,
    TensorMetadata,
)
from pronto._errors import InferenceError
from pronto._grpc import AsyncClient, Client
from pronto._rest import AsyncRestClient, RestClient
from pronto._retry import RetryEvent, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncRestClient",
    "Client",
    "InferResult",
    "InferenceError",
    "ModelMetadata",
    "PredictResult",
    "Prediction",
    "RestClient",
    "RetryEvent",
    "RetryPolicy",
    "TensorMetadata",
]
