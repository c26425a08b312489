#!/bin/bash
# Side by side, one run: REST predictions (wrk, API key) through two Envoys rendered from two
# revisions of the gateway template, in front of the same `pronto serve` workers, in
# alternating rounds. Usage:
#   BEFORE_TREE=<checkout of the older revision> REPO=<model repository> loadtest/wrk/filters_ab.sh
# Optional: ROUNDS (6), DUR (seconds per round, 5), OUT (work folder).
set -e
WT=$(cd "$(dirname "$0")/../.." && pwd); PY=$WT/.venv/bin/python
D=${OUT:-$(mktemp -d)}; mkdir -p $D
: "${BEFORE_TREE:?a checkout of the older revision}" "${REPO:?a model repository}"
echo "tester:k-ab-123" > $D/keys
BASE=51700
cd $WT
$PY -m server.cli serve --model-repository "$REPO" --workers 2 --port 51690 --worker-base-port $BASE --metrics-port 0 > $D/serve.log 2>&1 &
SERVE=$!
trap 'kill $SERVE $E1 $E2 2>/dev/null' EXIT
common="--workers 2 --worker-base-port $BASE --listen-address 127.0.0.1 --api-keys-file $D/keys --envoy-concurrency 1 --stats-port 0"
(cd "$BEFORE_TREE" && $PY -m server.cli gateway $common --listen-port 51681 --admin-port 51691 --render $D/before.yaml >/dev/null)
(cd $WT && $PY -m server.cli gateway $common --listen-port 51682 --admin-port 51692 --render $D/after.yaml >/dev/null)
ENVOY=$WT/.venv/bin/envoy
"$ENVOY" -c $D/before.yaml --concurrency 1 --base-id 71 -l warning > $D/e1.log 2>&1 & E1=$!
"$ENVOY" -c $D/after.yaml --concurrency 1 --base-id 72 -l warning > $D/e2.log 2>&1 & E2=$!
for i in $(seq 60); do curl -sf -o /dev/null localhost:51681/v2/health/ready && curl -sf -o /dev/null localhost:51682/v2/health/ready && break; sleep 0.5; done
export BENCH_BODY=$($PY -c "from loadtest.chaos.attacks import rest_predict_body; print(rest_predict_body(1).decode())")
export BENCH_HEADERS="x-api-key: k-ab-123"
for round in $(seq ${ROUNDS:-6}); do
  order="before:51681 after:51682"; [ $((round % 2)) = 0 ] && order="after:51682 before:51681"
  for v in $order; do
    name=${v%%:*}; port=${v##*:}
    out=$(wrk -t1 -c16 -d${DUR:-5}s -s $WT/tests/gateway/wrk_report.lua http://127.0.0.1:$port/v1/models/flight-delay:predict | tail -1)
    echo "$round $name $out"
  done
done
