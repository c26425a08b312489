# Pronto: one entry point for setup, running, testing and benchmarking.
# `make run` and `make test` install what they need on first use.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
TOOLS_BIN   := $(CURDIR)/.tools/bin
export PATH := $(CURDIR)/$(VENV)/bin:$(TOOLS_BIN):$(PATH)

UV_VERSION         := 0.13.8
GHZ_VERSION        := v0.120.0
HELM_VERSION       := v3.19.5
HELM_K8S_MINOR     := 34
HELM_LDFLAGS       := $(foreach p,chartutil lint/rules,-X helm.sh/helm/v3/pkg/$(p).k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/$(p).k8sVersionMinor=$(HELM_K8S_MINOR))
ACTIONLINT_VERSION := v1.7.12
FAKE_GCS_VERSION   := v1.56.1
APT_PACKAGES := prometheus prometheus-alertmanager wrk nghttp2-client gcc libc6-dev

SETUP_STAMP := $(VENV)/.pronto-setup
PYTEST_ARGS ?=

GEN_PY   := server/generated
GEN_DESC := gateway/generated/pronto.pb
GATEWAY_PROTOS := proto/inference/grpc_service.proto proto/pronto/v1/prediction.proto proto/pronto/v1/feedback.proto
# operator-only services: Python stubs, but not in the gateway's descriptor set
ADMIN_PROTOS   := proto/pronto/v1/rollout.proto proto/pronto/v1/feedback_peer.proto
PROTOS   := $(GATEWAY_PROTOS) $(ADMIN_PROTOS)

.PHONY: help setup setup-apt setup-go setup-tools setup-terraform cluster-build cluster-rehearse run train repro test lint proto proto-check go-proto dashboards rehearse bench chaos soak monitor compare-setup clean

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(SETUP_STAMP) ## install Python packages, Go tools (ghz, helm) and Debian packages

$(SETUP_STAMP): pyproject.toml setup.py .ci/constraints.txt server/_textcodes.c
	$(MAKE) setup-apt setup-go
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(UV) pip install -q -p $(PY) -c .ci/constraints.txt -e '.[serve,train,dev]'
	@# Bytecode for every installed module, once: uv writes none, and with
	@# PYTHONDONTWRITEBYTECODE set each process would compile what it imports again
	@# (several seconds for the training stack, about two for a server).
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null
	touch $@

setup-apt: ## Debian packages: prometheus (promtool), prometheus-alertmanager (amtool), wrk, h2load (nghttp2-client), a C compiler
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

setup-go: ## Go tools at pinned versions into .tools/bin
	@mkdir -p $(TOOLS_BIN)
	@# `go install` binaries do not report their module version, so a stamp
	@# file per pinned version keeps this step idempotent and upgradeable.
	@test -f $(TOOLS_BIN)/.ghz-$(GHZ_VERSION) || { \
	  GOBIN=$(TOOLS_BIN) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION) && \
	  touch $(TOOLS_BIN)/.ghz-$(GHZ_VERSION); }
	@# Helm's release binaries stamp the Kubernetes version of their client-go
	@# (helm's own Makefile does it with these -X flags); a plain `go install`
	@# leaves v1.20, which the chart's kubeVersion constraint refuses.
	@test -f $(TOOLS_BIN)/.helm-$(HELM_VERSION)-k8s$(HELM_K8S_MINOR) || { \
	  GOBIN=$(TOOLS_BIN) go install -ldflags "$(HELM_LDFLAGS)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION) && \
	  touch $(TOOLS_BIN)/.helm-$(HELM_VERSION)-k8s$(HELM_K8S_MINOR); }
	@# ghzhtml renders a ghz JSON report with ghz's own HTML printer (ghz pinned in its go.mod).
	@test -f $(TOOLS_BIN)/.ghzhtml-$(GHZ_VERSION) || { \
	  (cd loadtest/ghzhtml && GOBIN=$(TOOLS_BIN) go install .) && \
	  touch $(TOOLS_BIN)/.ghzhtml-$(GHZ_VERSION); }
	@test -f $(TOOLS_BIN)/.actionlint-$(ACTIONLINT_VERSION) || { \
	  GOBIN=$(TOOLS_BIN) go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION) && \
	  touch $(TOOLS_BIN)/.actionlint-$(ACTIONLINT_VERSION); }
	@# a GCS emulator for the capture-upload tests (google-cloud-storage's STORAGE_EMULATOR_HOST)
	@test -f $(TOOLS_BIN)/.fake-gcs-server-$(FAKE_GCS_VERSION) || { \
	  GOBIN=$(TOOLS_BIN) go install github.com/fsouza/fake-gcs-server@$(FAKE_GCS_VERSION) && \
	  touch $(TOOLS_BIN)/.fake-gcs-server-$(FAKE_GCS_VERSION); }

TF_SETUP := terraform/scripts/setup-offline.sh
TF       := .tools/terraform/bin/terraform
CHECKOV  := .tools/checkov-venv/bin/checkov

setup-tools: setup ## terraform (or OpenTofu) and checkov (own virtualenv), for the infra checks
	$(TF_SETUP) tools

setup-terraform: setup ## the above plus hashicorp/google built into an offline mirror (~10 min once)
	$(TF_SETUP) all

run: setup ## train the default model if needed, then serve it behind Envoy
	$(VENV)/bin/pronto up

train: setup ## train the default model into models/ (generates data/flights.csv if missing)
	$(VENV)/bin/pronto train

repro: setup ## reproduce the DVC pipeline (generate -> train -> evaluate)
	$(VENV)/bin/dvc repro

# static checks `make test` runs first (.ci/run times them on their own and empties this)
TEST_STATIC ?= lint proto-check
test: setup setup-terraform cluster-build ## lint, proto drift check and the whole test suite
	$(if $(strip $(TEST_STATIC)),$(MAKE) $(TEST_STATIC))
	$(PY) -m pytest $(PYTEST_ARGS)

cluster-build: setup ## build pinned etcd, kube-apiserver, kube-controller-manager, kubectl (once, cached)
	$(PY) -m tests.cluster.controlplane build

cluster-rehearse: cluster-build ## install, upgrade, roll back and test the chart on a loopback API server
	$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

lint: setup-tools ## ruff, mypy, buf; hadolint, actionlint, helm lint, checkov; terraform fmt
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy server trainer gateway loadtest pronto_contract pronto_cli pronto dashboards
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf format --diff --exit-code
	.github/scripts/lint-delivery.sh
	TF_CLI_CONFIG_FILE=$(CURDIR)/.tools/terraform/cli.tfrc $(TF) fmt -check -recursive terraform/
	$(CHECKOV) --quiet --compact -d terraform --config-file terraform/.checkov.yaml

rehearse: setup ## run train.yml's and deploy.yml's own steps here, with local stand-ins for the cloud
	$(PY) .github/scripts/rehearse.py

proto: setup ## regenerate Python stubs and the Envoy descriptor set from proto/
	rm -rf $(GEN_PY) && mkdir -p $(GEN_PY) $(dir $(GEN_DESC))
	$(PY) -m grpc_tools.protoc -I proto \
	  --python_out=$(GEN_PY) --grpc_python_out=$(GEN_PY) \
	  --mypy_out=$(GEN_PY) --mypy_grpc_out=$(GEN_PY) $(PROTOS)
	$(PY) -m grpc_tools.protoc -I proto --include_imports --include_source_info \
	  --descriptor_set_out=$(GEN_DESC) $(GATEWAY_PROTOS)
	$(PY) -m server.protogen $(GEN_PY)
	cp $(GEN_DESC) charts/pronto/files/

# Bytecode caches beside the stubs (any tree that has run Python) are not generated code.
proto-check: ## fail when generated files differ from what proto/ produces
	@tmp=$$(mktemp -d); cp -r $(GEN_PY) $$tmp/py; cp $(GEN_DESC) $$tmp/desc.pb; \
	cp charts/pronto/files/$(notdir $(GEN_DESC)) $$tmp/chart.pb; \
	$(MAKE) -s proto >/dev/null || { rm -rf $$tmp; exit 1; }; \
	if ! diff -r -x __pycache__ $$tmp/py $(GEN_PY) >/dev/null || ! cmp -s $$tmp/desc.pb $(GEN_DESC) \
	  || ! cmp -s $$tmp/chart.pb $(GEN_DESC); then \
	  echo "generated code is out of date: run 'make proto' and commit the result"; \
	  git status --short -- $(GEN_PY) $(GEN_DESC) charts/pronto/files; rm -rf $$tmp; exit 1; fi; \
	rm -rf $$tmp

dashboards: setup ## regenerate charts/pronto/files/dashboards/*.json from dashboards/ (grafana-foundation-sdk)
	$(PY) -m dashboards

go-proto: setup ## regenerate the Go example's stubs (examples/go/gen) from proto/
	examples/go/generate.sh

bench: setup compare-setup ## load-test scenarios; writes loadtest/results/ and docs/benchmarks.md
	$(VENV)/bin/pronto bench all

CHAOS_ARGS ?=
ATTACK_ARGS ?=
SOAK_ARGS  ?=
chaos: setup ## faults under load through Envoy (kill -9, overload, rolling restart, hot reload, slow model; tables into docs/reliability.md), then the attacks
	$(PY) -m loadtest.chaos $(CHAOS_ARGS)
	$(PY) -m loadtest.chaos.attacks $(ATTACK_ARGS)

soak: setup ## 10 minutes at half the peak rate through Envoy, a worker killed every 30 s: RSS growth and p99 per window
	$(PY) -m loadtest.soak $(SOAK_ARGS)

monitor: setup ## local Prometheus (and Grafana when installed) scraping `make run`, with the chart's rules
	$(PY) -m loadtest.monitor

MLSERVER_VENV := .tools/mlserver-venv
compare-setup: ## MLServer 1.7 in a virtualenv of its own, for the side-by-side comparison
	@# MLServer 1.7.1's parallel workers die with uvloop 0.21+ ("There is no current event loop").
	@test -x $(MLSERVER_VENV)/bin/mlserver || { python3 -m venv $(MLSERVER_VENV) && \
	  $(MLSERVER_VENV)/bin/pip install -q uv==$(UV_VERSION) && \
	  $(MLSERVER_VENV)/bin/uv pip install -q -p $(MLSERVER_VENV)/bin/python mlserver==1.7.1 \
	    mlserver-sklearn==1.7.1 'uvloop<0.21' scikit-learn==1.9.1 pandas==3.1.1 numpy==2.4.6; }

clean: ## remove caches and test artefacts (keeps .venv and .tools)
	rm -rf .pytest_cache .mypy_cache .ruff_cache loadtest/results/tmp
