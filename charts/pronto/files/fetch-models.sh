# Copies each served model's versions from the GCS model registry into the pod's model
# repository, with the pod's Workload Identity. MODELS holds one line per model:
#   <name> <version policy> [<rollout candidate>]
# The policy is the server's: pinned:V1,V2 copies exactly those versions; latest, latest:N
# and all choose among the registry's published versions (numeric folders up to the
# model's LATEST marker, which the training workflow moves once a version is complete).
# Any missing or incomplete version stops the pod before the server starts.
set -eu

fetch() {
  gcloud storage cp --recursive "$MODEL_REGISTRY/$1/$2" "$MODEL_ROOT/$1/"
  for file in model.onnx model.json; do
    if [ ! -s "$MODEL_ROOT/$1/$2/$file" ]; then
      echo "incomplete: $MODEL_REGISTRY/$1/$2/ has no $file" >&2
      exit 1
    fi
  done
  echo "fetched $MODEL_REGISTRY/$1/$2"
}

published() {
  latest=$(gcloud storage cat "$MODEL_REGISTRY/$1/LATEST" 2>/dev/null | tr -dc 0-9 || true)
  gcloud storage ls "$MODEL_REGISTRY/$1/" | while read -r url; do
    version=${url#"$MODEL_REGISTRY/$1/"}
    version=${version%/}
    case "$version" in '' | *[!0-9]*) continue ;; esac
    if [ -z "$latest" ] || [ "$version" -le "$latest" ]; then echo "$version"; fi
  done | sort -rn
}

while read -r name policy candidate; do
  [ -n "$name" ] || continue
  mkdir -p "$MODEL_ROOT/$name"
  case "$policy" in
    pinned:*) versions=$(echo "${policy#pinned:}" | tr ',' ' ') ;;
    all) versions=$(published "$name") ;;
    latest) versions=$(published "$name" | head -n 1) ;;
    latest:*) versions=$(published "$name" | head -n "${policy#latest:}") ;;
    *) echo "unknown version policy '$policy' for $name" >&2; exit 1 ;;
  esac
  if [ -z "$versions" ]; then
    echo "no published version of $name under $MODEL_REGISTRY/$name/ ($policy)" >&2
    exit 1
  fi
  for version in $versions $candidate; do
    fetch "$name" "$version"
  done
done <<MODELS_END
$MODELS
MODELS_END
