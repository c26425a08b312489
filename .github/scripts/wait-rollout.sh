#!/usr/bin/env bash
# Wait for the automatic rollout analysis in every pod of a release: exit 0 once every
# pod has promoted the candidate, 1 as soon as one pod aborted it (the others are then
# aborted too, so no pod keeps sending traffic to it), 2 on timeout.
#
# Usage: wait-rollout.sh NAMESPACE RELEASE MODEL CANDIDATE [TIMEOUT_SECONDS]
set -euo pipefail
namespace=$1 release=$2 model=$3 candidate=$4 timeout=${5:-1800}
selector="app.kubernetes.io/instance=${release},app.kubernetes.io/name=pronto"
deadline=$(( $(date +%s) + timeout ))

pods() { kubectl -n "$namespace" get pods -l "$selector" --field-selector=status.phase=Running -o name; }
state() { kubectl -n "$namespace" exec "$1" -c server -- pronto rollout status "$model" --json; }

while [ "$(date +%s)" -lt "$deadline" ]; do
  promoted=0 total=0
  for pod in $(pods); do
    total=$((total + 1))
    json=$(state "$pod") || continue
    stable=$(jq -r '.stable' <<<"$json")
    current=$(jq -r '.candidate // empty' <<<"$json")
    weight=$(jq -r '.weight' <<<"$json")
    echo "$pod: stable ${stable}, candidate ${current:-none}, weight ${weight}%"
    if [ -z "$current" ]; then
      if [ "$stable" = "$candidate" ]; then
        promoted=$((promoted + 1))
      else
        echo "::error::$pod aborted version $candidate: $(jq -c '.history[-1]' <<<"$json")"
        for other in $(pods); do
          kubectl -n "$namespace" exec "$other" -c server -- \
            pronto rollout abort "$model" --reason "aborted in $pod" || true
        done
        exit 1
      fi
    fi
  done
  if [ "$total" -gt 0 ] && [ "$promoted" = "$total" ]; then
    echo "every pod promoted version $candidate"
    exit 0
  fi
  sleep 15
done
echo "::error::the rollout of version $candidate did not finish in ${timeout}s"
exit 2
