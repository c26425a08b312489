#!/usr/bin/env bash
# Installs what checking terraform/ needs, without the Terraform registry:
#
#   setup-offline.sh tools     terraform (or OpenTofu) at the pinned version, checkov, and
#                              the CLI config that points terraform at the mirror (seconds)
#   setup-offline.sh provider  hashicorp/google built from its Go module into that
#                              filesystem mirror (about 10 minutes once per machine)
#   setup-offline.sh all       both (the default)
#   setup-offline.sh env       print the exports that make a shell use the above
#
# Everything lands under .tools/ (git-ignored); the built provider is also kept
# in ~/.cache/pronto. Each step is skipped when its result is already there at
# the pinned version, so re-runs take a second.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${PRONTO_TOOLS_DIR:-$ROOT/.tools}
TF_DIR=$TOOLS/terraform
# Built providers are also kept outside the work tree, so a fresh clone on the
# same machine (CI checks out anew each run) copies instead of rebuilding.
CACHE=${PRONTO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pronto}

TERRAFORM_VERSION=1.11.4
# Fallback when no terraform of the pinned version is installed. Terraform's
# own module cannot be built with `go install` (its go.mod replaces internal
# submodules with local paths), OpenTofu's can.
OPENTOFU_VERSION=1.10.6

GOOGLE_PROVIDER_VERSION=8.0.0
GOOGLE_PROVIDER_MODULE=github.com/hashicorp/terraform-provider-google
# The provider's tags (v8.x) do not match its module path (no /v8 suffix), so
# the Go module proxy serves its commits only as pseudo-versions. This is the
# main branch two days after the v8.0.0 release (CHANGELOG.md in the module
# tops out at 8.0.0); it is installed into the mirror as 8.0.0.
GOOGLE_PROVIDER_PSEUDO_VERSION=v1.20.1-0.20260828184646-f3721fb45fa3

CHECKOV_VERSION=3.3.30

PLATFORM="$(go env GOOS 2>/dev/null || echo linux)_$(go env GOARCH 2>/dev/null || echo amd64)"
MIRROR=$TF_DIR/mirror
CLI_CONFIG=$TF_DIR/cli.tfrc
TF_BIN=$TF_DIR/bin/terraform
CHECKOV_VENV=$TOOLS/checkov-venv

log() { printf 'setup-offline: %s\n' "$*" >&2; }

# The version a terraform or tofu binary reports, or nothing.
binary_version() {
  TF_CLI_CONFIG_FILE=/dev/null "$1" version -json 2>/dev/null |
    sed -n 's/.*"terraform_version": *"\([^"]*\)".*/\1/p' | head -n1
}

build_opentofu() {
  local out=$TF_DIR/opentofu-$OPENTOFU_VERSION/tofu
  if [[ -x $out && $(binary_version "$out") == "$OPENTOFU_VERSION" ]]; then
    echo "$out"
    return
  fi
  log "building OpenTofu $OPENTOFU_VERSION from its Go module (a few minutes)"
  local src tmp
  src=$(cd / && go mod download -json "github.com/opentofu/opentofu@v$OPENTOFU_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $src ]] || { log "could not download github.com/opentofu/opentofu@v$OPENTOFU_VERSION"; exit 1; }
  # go install pkg@version refuses modules with replace directives, and the
  # module cache is read-only, so build from a writable copy.
  tmp=$(mktemp -d)
  trap 'chmod -R u+w "$tmp" && rm -rf "$tmp"' RETURN
  cp -r "$src" "$tmp/src" && chmod -R u+w "$tmp/src"
  mkdir -p "$(dirname "$out")"
  (cd "$tmp/src" && GOFLAGS=-mod=mod nice -n 10 go build -trimpath \
    -ldflags "-s -w -X github.com/opentofu/opentofu/version.dev=no" -o "$out" ./cmd/tofu)
  echo "$out"
}

install_terraform() {
  local current
  if [[ -x $TF_BIN ]]; then
    current=$(binary_version "$TF_BIN")
    if [[ $current == "$TERRAFORM_VERSION" || $current == "$OPENTOFU_VERSION" ]]; then
      return
    fi
  fi
  mkdir -p "$(dirname "$TF_BIN")"
  local system
  system=$(command -v terraform || true)
  if [[ -n $system && $system != "$TF_BIN" && $(binary_version "$system") == "$TERRAFORM_VERSION" ]]; then
    log "using $system (terraform $TERRAFORM_VERSION)"
    ln -sfn "$system" "$TF_BIN"
    return
  fi
  log "terraform $TERRAFORM_VERSION not found; falling back to OpenTofu $OPENTOFU_VERSION"
  ln -sfn "$(build_opentofu)" "$TF_BIN"
}

install_checkov() {
  # The package metadata answers in milliseconds; `checkov --version` takes seconds.
  if [[ -x $CHECKOV_VENV/bin/checkov ]] &&
    compgen -G "$CHECKOV_VENV/lib/python3*/site-packages/checkov-$CHECKOV_VERSION.dist-info" >/dev/null; then
    return
  fi
  # Its own environment: checkov pins packageurl-python below what the
  # project's pip-audit needs, so the two cannot share the project venv.
  log "installing checkov $CHECKOV_VERSION into $CHECKOV_VENV"
  local uv=$ROOT/.venv/bin/uv python=${PYTHON:-python3}
  if [[ -x $uv ]]; then
    "$uv" venv -q --allow-existing -p "$python" "$CHECKOV_VENV"
    "$uv" pip install -q -p "$CHECKOV_VENV/bin/python" "checkov==$CHECKOV_VERSION"
  else
    "$python" -m venv "$CHECKOV_VENV"
    "$CHECKOV_VENV/bin/python" -m pip install -q "checkov==$CHECKOV_VERSION"
  fi
}

build_provider() {
  local name=terraform-provider-google_v$GOOGLE_PROVIDER_VERSION
  local dir=$MIRROR/registry.terraform.io/hashicorp/google/$GOOGLE_PROVIDER_VERSION/$PLATFORM
  # Kept outside the package directory: terraform hashes everything in it.
  local stamp=$TF_DIR/stamps/google-$GOOGLE_PROVIDER_VERSION-$PLATFORM
  local want="$GOOGLE_PROVIDER_MODULE@$GOOGLE_PROVIDER_PSEUDO_VERSION"
  local cached=$CACHE/terraform-provider-google/$GOOGLE_PROVIDER_PSEUDO_VERSION/$PLATFORM/$name
  if [[ ! -x $dir/$name || $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
    mkdir -p "$dir" "$(dirname "$stamp")"
    if [[ ! -x $cached ]]; then
      log "building $want as hashicorp/google $GOOGLE_PROVIDER_VERSION (about 10 minutes on 2 cores)"
      local gobin timing=$TF_DIR/stamps/google-$GOOGLE_PROVIDER_VERSION-build.txt
      gobin=$(mktemp -d)
      local time_cmd=()
      [[ -x /usr/bin/time ]] && time_cmd=(/usr/bin/time -v -o "$timing")
      (cd / && GOBIN=$gobin nice -n 10 "${time_cmd[@]}" go install -trimpath \
        -ldflags "-s -w -X $GOOGLE_PROVIDER_MODULE/version.ProviderVersion=$GOOGLE_PROVIDER_VERSION" \
        "$want")
      [[ -f $timing ]] && grep -E 'Elapsed|Maximum resident' "$timing" | sed 's/^[[:space:]]*/setup-offline: /' >&2
      mkdir -p "$(dirname "$cached")"
      mv "$gobin/terraform-provider-google" "$cached.tmp" && mv "$cached.tmp" "$cached"
      rmdir "$gobin"
    fi
    cp "$cached" "$dir/$name.tmp" && mv "$dir/$name.tmp" "$dir/$name"
    echo "$want" >"$stamp"
  fi
  # OpenTofu resolves hashicorp/google on its own registry's host name.
  local tofu_dir=$MIRROR/registry.opentofu.org/hashicorp/google/$GOOGLE_PROVIDER_VERSION/$PLATFORM
  mkdir -p "$tofu_dir"
  ln -f "$dir/$name" "$tofu_dir/$name"
}

write_cli_config() {
  mkdir -p "$TF_DIR"
  cat >"$CLI_CONFIG" <<EOF
# Written by terraform/scripts/setup-offline.sh: providers come from the local
# mirror only; nothing is fetched from a registry.
provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["registry.terraform.io/hashicorp/google", "registry.opentofu.org/hashicorp/google"]
  }
}
EOF
}

print_env() {
  echo "export TF_CLI_CONFIG_FILE=$CLI_CONFIG"
  echo "export PATH=$TF_DIR/bin:$CHECKOV_VENV/bin:\$PATH"
}

case ${1:-all} in
  tools) install_terraform; install_checkov; write_cli_config ;;
  provider) install_terraform; build_provider; write_cli_config ;;
  all) install_terraform; install_checkov; build_provider; write_cli_config ;;
  env) print_env ;;
  *)
    echo "usage: $0 [tools|provider|all|env]" >&2
    exit 2
    ;;
esac
