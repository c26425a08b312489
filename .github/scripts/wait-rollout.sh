#!/usr/bin/env bash
# Wait for the automatic rollout analysis in every pod of a release: exit 0 once every
# pod has promoted the candidate, 1 as soon as one pod aborted it (the others are then
# aborted too, so no pod keeps sending traffic to it), 2 on timeout, 3 at once when a pod's
# state cannot be read for a reason waiting will not cure (RBAC refuses `kubectl exec`,
# `pronto rollout status` fails). A pod that is gone or not running yet is looked at again.
#
# Usage: wait-rollout.sh NAMESPACE RELEASE MODEL CANDIDATE [TIMEOUT_SECONDS]
# POLL_SECONDS (default 15) sets the pause between two looks.
set -euo pipefail
namespace=$1 release=$2 model=$3 candidate=$4 timeout=${5:-1800}
poll=${POLL_SECONDS:-15}
selector="app.kubernetes.io/instance=${release},app.kubernetes.io/name=pronto"
deadline=$(( $(date +%s) + timeout ))
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

pods() { kubectl -n "$namespace" get pods -l "$selector" --field-selector=status.phase=Running -o name; }

# The pod's rollout state as JSON on stdout; status 1 when the pod went away or is not
# running (look again later), 3 for anything else.
state() {
  local rc=0
  kubectl -n "$namespace" exec "$1" -c server -- pronto rollout status "$model" --json \
    2>"$errors" || rc=$?
  [ "$rc" -eq 0 ] && return 0
  case "$(cat "$errors")" in
    *Forbidden* | *forbidden* | *Unauthorized*) ;;
    *"Error from server (NotFound)"* | *"unable to upgrade connection"* | \
      *"cannot exec into a container in a completed pod"*)
      echo "$1: not reachable now: $(tr '\n' ' ' <"$errors")" >&2
      return 1 ;;
  esac
  echo "::error::cannot read the rollout state of $1 (exit $rc): $(tr '\n' ' ' <"$errors")" >&2
  return 3
}

while [ "$(date +%s)" -lt "$deadline" ]; do
  promoted=0 total=0
  running=$(pods) || { echo "::error::cannot list the pods of release $release" >&2; exit 3; }
  for pod in $running; do
    total=$((total + 1))
    rc=0
    json=$(state "$pod") || rc=$?
    if [ "$rc" -eq 1 ]; then continue; elif [ "$rc" -ne 0 ]; then exit "$rc"; fi
    stable=$(jq -r '.stable' <<<"$json")
    current=$(jq -r '.candidate // empty' <<<"$json")
    weight=$(jq -r '.weight' <<<"$json")
    echo "$pod: stable ${stable}, candidate ${current:-none}, weight ${weight}%"
    if [ -z "$current" ]; then
      if [ "$stable" = "$candidate" ]; then
        promoted=$((promoted + 1))
      else
        echo "::error::$pod aborted version $candidate: $(jq -c '.history[-1]' <<<"$json")"
        for other in $(pods || true); do
          kubectl -n "$namespace" exec "$other" -c server -- \
            pronto rollout abort "$model" --reason "aborted in $pod" \
            || echo "::warning::could not abort version $candidate in $other"
        done
        exit 1
      fi
    fi
  done
  if [ "$total" -gt 0 ] && [ "$promoted" = "$total" ]; then
    echo "every pod promoted version $candidate"
    exit 0
  fi
  sleep "$poll"
done
echo "::error::the rollout of version $candidate did not finish in ${timeout}s"
exit 2
