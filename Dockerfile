# syntax=docker/dockerfile:1
#
# Images of Pronto, one build, several targets:
#   serve (default)  `pronto serve` / `pronto gateway --render`; the model comes from a
#                    mounted repository (the Helm chart's GCS init container).
#   serve-baked      the same, with ./models/<name>/<version>/ copied in at build time.
#   trainer          `pronto train` with the train extra (DVC, scikit-learn, skl2onnx).
#
#   docker build -t pronto .
#   docker build --target serve-baked -t pronto:baked .     # needs ./models
#   docker build --target trainer -t pronto-trainer .
#
# Builder and runtime share one pinned slim base. Every dependency installs from wheels;
# the serving builder has a C compiler for the project's own small extension
# (server/_textcodes.c), and the runtime stages get only the finished virtualenv.

FROM python:3.11.14-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# The base image's own pip/setuptools/wheel go: builders use the virtualenv's pip (from
# ensurepip) and the runtime stages need no installer at all.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 10001 pronto \
    && useradd --system --uid 10001 --gid pronto --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin pronto

# ---------------------------------------------------------------------------------------
FROM base AS build-serve
WORKDIR /src
# The compiler for server/_textcodes.c, in this stage only. gcc is pinned; libc6-dev is
# not, as it must match the libc6 of whatever the security archive holds on the build day.
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends gcc=4:12.2.0-3 libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv "$VIRTUAL_ENV"
COPY .ci/constraints.txt .ci/constraints.txt
# setup.py builds the extension against numpy's headers
COPY pyproject.toml setup.py README.md ./
# Dependencies first, listed from pyproject.toml alone: this layer is rebuilt only when the
# pins change, not on every code change. Exact pins (pyproject + the full constraints file),
# all as wheels.
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["serve"]))' >/tmp/requirements.txt \
    && pip install --only-binary=:all: -c .ci/constraints.txt -r /tmp/requirements.txt
# Only what serving runs: the trainer and the load tests stay out of this image.
COPY pronto_contract pronto_contract
COPY pronto_cli pronto_cli
COPY server server
COPY gateway gateway
# Then the project itself, built by the pinned setuptools of pyproject.toml; pip leaves the
# environment afterwards: the runtime needs no installer.
RUN pip install --no-deps --only-binary=:all: --no-binary=pronto-serving . \
    && python -I -c 'import server._textcodes' \
    && pip check \
    && pip uninstall --yes pip \
    && pronto --help >/dev/null

# ---------------------------------------------------------------------------------------
FROM base AS build-train
WORKDIR /src
RUN python -m venv "$VIRTUAL_ENV"
COPY .ci/constraints.txt .ci/constraints.txt
COPY pyproject.toml README.md ./
# Dependencies first (see build-serve). Not --only-binary: a few pure-Python dependencies of
# DVC ship only as sdists (e.g. antlr4-python3-runtime via hydra-core); with no compiler
# here, a C sdist would fail.
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["train"]))' >/tmp/requirements.txt \
    && pip install -c .ci/constraints.txt -r /tmp/requirements.txt
# The trainer imports neither the server nor the gateway (tests/test_architecture.py).
COPY pronto_contract pronto_contract
COPY pronto_cli pronto_cli
COPY trainer trainer
RUN pip install --no-deps . \
    && pip check \
    && pip uninstall --yes pip \
    && pronto --help >/dev/null

# ---------------------------------------------------------------------------------------
FROM base AS runtime
LABEL org.opencontainers.image.title="pronto" \
      org.opencontainers.image.description="gRPC/REST inference server for tabular scikit-learn models" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-serve /opt/venv /opt/venv
# The shared gRPC port listens on the container's interfaces so `docker run -p` reaches
# it; worker-private ports and /metrics stay on loopback (the chart sets all three).
ENV PRONTO_MODEL_REPOSITORY=/models \
    PRONTO_HOST=0.0.0.0 \
    PRONTO_METRICS_DIR=/tmp/pronto-metrics \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# 50051 shared gRPC, 50100+ worker-private gRPC, 9090 /metrics
EXPOSE 50051 9090
# Docker-only health check; Kubernetes uses the chart's native gRPC probes instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os,sys,grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; c=grpc.insecure_channel('127.0.0.1:'+os.environ.get('PRONTO_PORT','50051')); sys.exit(g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=3).status != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["pronto"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------
FROM runtime AS serve-baked
# Model files are data, owned by root and read-only to the server's user.
COPY models/ /opt/pronto/models/
ENV PRONTO_MODEL_REPOSITORY=/opt/pronto/models

# ---------------------------------------------------------------------------------------
FROM base AS trainer
LABEL org.opencontainers.image.title="pronto-trainer"
COPY --from=build-train /opt/venv /opt/venv
ENV HOME=/tmp
WORKDIR /work
USER 10001:10001
# A batch job: it runs to completion and has nothing to probe.
HEALTHCHECK NONE
ENTRYPOINT ["pronto"]
CMD ["train"]

# ---------------------------------------------------------------------------------------
# The default target (last stage).
FROM runtime AS serve
