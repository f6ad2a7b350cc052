#!/usr/bin/env bash
# Committed policy writes/s on a fresh 3-node loopback cluster, for one or more `verdict` binaries
# in alternating rounds (so a noisy machine affects each alike), with the CPU time of every process
# per committed write, read from /proc/PID/stat around the run.
# Usage: scripts/bench-writes-ab.sh ROUNDS BIN [BIN...]
#   e.g. scripts/bench-writes-ab.sh 3 /tmp/verdict-before ./target/release/verdict
# KIND=entities measures entity upserts instead; CONN sets the connections (default 256).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:?rounds}; shift
KIND=${KIND:-policies}
CONN=${CONN:-256}
export VERDICT_CLUSTER_SECRET=bench-secret
SPEC=1=127.0.0.1:39180/127.0.0.1:39181,2=127.0.0.1:39280/127.0.0.1:39281,3=127.0.0.1:39380/127.0.0.1:39381
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

one_run() { # bin
  local bin=$1 work pids=() leader bench bench_start bench_last total=0 lead_ticks=0
  work=$(mktemp -d /tmp/verdict-writes-ab.XXXXXX)
  for i in 1 2 3; do
    "$bin" serve --node-id $i --data-dir "$work/n$i" --listen 127.0.0.1:39${i}80 \
      --peer-listen 127.0.0.1:39${i}81 --initial-cluster "$SPEC" >"$work/n$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 1 300); do curl -sf http://127.0.0.1:39${i}80/readyz >/dev/null && break; sleep 0.1; done
  done
  leader=$(curl -sf http://127.0.0.1:39180/v1/cluster | sed -n 's/.*"leader":\([0-9]*\).*/\1/p')
  declare -A before
  for p in "${pids[@]}"; do before[$p]=$(ticks "$p"); done
  VERDICT_URL=http://127.0.0.1:39${leader}80 "$bin" bench --writes "$KIND" --connections "$CONN" \
    --duration 10s --warmup 2s >"$work/bench.out" 2>&1 &
  bench=$!
  bench_start=$(ticks $bench); bench_last=$bench_start
  while kill -0 $bench 2>/dev/null; do bench_last=$(ticks $bench 2>/dev/null || echo "$bench_last"); sleep 0.2; done
  wait $bench
  for i in 0 1 2; do
    local d=$(( $(ticks "${pids[$i]}") - ${before[${pids[$i]}]} ))
    total=$(( total + d ))
    [ $((i + 1)) = "$leader" ] && lead_ticks=$d
  done
  total=$(( total + bench_last - bench_start ))
  local requests tput
  requests=$(awk '/^requests/{print $2; exit}' "$work/bench.out" | tr -d :)
  tput=$(awk '/^throughput/{print $2; exit}' "$work/bench.out")
  # The CPU counters cover warm-up and measurement (12 s); the request count only the last 10 s.
  echo "$bin: $tput writes/s, CPU per write (all processes) $(( total * 1000000 / HZ * 10 / 12 / requests )) µs, leader $(( lead_ticks * 1000000 / HZ * 10 / 12 / requests )) µs"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

for r in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do echo -n "round $r  "; one_run "$bin"; done
done
