#!/usr/bin/env bash
# Go stubs for proto/ into gen/ (or into $1): protoc from grpcio-tools, protoc-gen-go and
# protoc-gen-go-grpc installed with `go install` at the pinned versions below.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
MODULE=pronto.example/goclient

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/gen}
bin=${GO_TOOLS_BIN:-$root/.tools/bin}
python=${PYTHON:-$root/.venv/bin/python}

mkdir -p "$bin"
# `go install` binaries do not report their module version: one stamp file per pin.
if [ ! -f "$bin/.protoc-gen-go-$PROTOC_GEN_GO_VERSION" ]; then
  GOBIN=$bin go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  touch "$bin/.protoc-gen-go-$PROTOC_GEN_GO_VERSION"
fi
if [ ! -f "$bin/.protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC_VERSION" ]; then
  GOBIN=$bin go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  touch "$bin/.protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC_VERSION"
fi

# The protos carry no go_package: map each file to a package of this module.
maps=(
  "Minference/grpc_service.proto=$MODULE/gen/inference;inference"
  "Mpronto/v1/prediction.proto=$MODULE/gen/pronto/v1;prontov1"
)
go_opts=(--go_opt=module=$MODULE --go-grpc_opt=module=$MODULE)
for m in "${maps[@]}"; do go_opts+=("--go_opt=$m" "--go-grpc_opt=$m"); done

rm -rf "$out" && mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && "$python" -m grpc_tools.protoc -I proto \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$tmp" --go-grpc_out="$tmp" "${go_opts[@]}" \
  inference/grpc_service.proto pronto/v1/prediction.proto)
cp -r "$tmp/gen/." "$out/"
