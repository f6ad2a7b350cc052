#!/usr/bin/env bash
# The cluster benchmarks of docs/benchmarks.md, on loopback, with the release binary:
#   1. decisions/s on a single node (SURFconext example), the baseline;
#   2. a 3-node cluster: decisions/s on one node, committed writes/s with many clients,
#      commit latency at 1,000 writes/s, and write → applied-on-every-node propagation.
# Usage: cargo build --release && scripts/bench-cluster.sh   (takes about two minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VERDICT_BIN:-./target/release/verdict}
WORK=$(mktemp -d /tmp/verdict-bench-cluster.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_ready() { # url
  for _ in $(seq 1 300); do
    curl -sf "$1/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "node $1 not ready" >&2
  return 1
}

load_example() { # url
  VERDICT_URL=$1 $BIN schema put examples/surfconext/schema.cedarschema >/dev/null
  VERDICT_URL=$1 $BIN policy load examples/surfconext/policies.cedar >/dev/null
  VERDICT_URL=$1 $BIN entity load examples/surfconext/entities.json >/dev/null
}

DECIDE=(bench --mix examples/surfconext/requests.json --connections 32 --duration 10s --warmup 2s)

echo "== single node: decisions"
$BIN serve --data-dir "$WORK/single" --listen 127.0.0.1:39080 --peer-listen 127.0.0.1:39081 \
  >"$WORK/single.log" 2>&1 &
PIDS+=($!)
wait_ready http://127.0.0.1:39080
load_example http://127.0.0.1:39080
VERDICT_URL=http://127.0.0.1:39080 $BIN "${DECIDE[@]}"
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

echo "== three nodes"
export VERDICT_CLUSTER_SECRET=bench-secret
SPEC=1=127.0.0.1:39180/127.0.0.1:39181,2=127.0.0.1:39280/127.0.0.1:39281,3=127.0.0.1:39380/127.0.0.1:39381
for i in 1 2 3; do
  $BIN serve --node-id $i --data-dir "$WORK/n$i" --listen 127.0.0.1:39${i}80 \
    --peer-listen 127.0.0.1:39${i}81 --initial-cluster "$SPEC" >"$WORK/n$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do wait_ready http://127.0.0.1:39${i}80; done
LEADER=$(curl -sf http://127.0.0.1:39180/v1/cluster | sed -n 's/.*"leader":\([0-9]*\).*/\1/p')
L=http://127.0.0.1:39${LEADER}80
F=http://127.0.0.1:39$(( LEADER % 3 + 1 ))80
echo "leader: node $LEADER"
echo "== three nodes: committed writes/s, 256 clients, through the leader (one policy each)"
VERDICT_URL=$L $BIN bench --writes policies --connections 256 --duration 10s --warmup 2s
echo "== three nodes: committed writes/s, 256 clients, through the leader (one entity each)"
VERDICT_URL=$L $BIN bench --writes entities --connections 256 --duration 10s --warmup 2s

echo "== three nodes: commit latency at 1,000 writes/s (64 clients, one policy each)"
VERDICT_URL=$L $BIN bench --writes policies --connections 64 --rate 1000 --duration 10s --warmup 2s

echo "== three nodes: write through the leader → applied on every node (500 writes, 50/s)"
VERDICT_URL=$L $BIN bench --propagation http://127.0.0.1:39180,http://127.0.0.1:39280,http://127.0.0.1:39380 \
  --requests 500 --rate 50

# The write benches leave policies and entities the example's schema would refuse: clear them,
# then load it.
curl -sf -X PUT "$L/v1/policies" -H 'content-type: application/json' -d '{"policies": {}}' >/dev/null
curl -sf -X PUT "$L/v1/entities" -H 'content-type: application/json' -d '[]' >/dev/null
load_example "$L"
echo "== three nodes: decisions on a follower"
VERDICT_URL=$F $BIN "${DECIDE[@]}"
