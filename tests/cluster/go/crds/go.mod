// Published CustomResourceDefinitions the chart's value sets need, pinned here and verified
// by go.sum. Nothing is built from this module: the tests run `go mod download -json` to
// find the YAML in the module cache.
module pronto.local/controlplane/crds

go 1.24.0

require (
	github.com/prometheus-operator/prometheus-operator v0.85.0
	sigs.k8s.io/gateway-api v1.4.1
)
