#!/usr/bin/env bash
# Same-run A/B of decision throughput: for each round, each binary in turn gets a fresh single node
# with the SURFconext example and `verdict bench` (32 connections, 10 s after 2 s warmup; the load
# generator is the first binary's). Prints one line per run: decisions/s, and the node's CPU time
# per decision over the measured 10 s (user + system, from /proc). Compare within a round.
# With RATE=N the load is paced to N decisions/s (below what both binaries sustain), so CPU per
# decision is compared at equal work: less sensitive to a busy machine than a saturating run.
# Usage: [RATE=N] scripts/bench-decisions-ab.sh ROUNDS BIN_A BIN_B [BIN…]   (about 15 s per run)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?usage: $0 ROUNDS BIN_A BIN_B [BIN…]}
shift
(($# >= 2)) || { echo "give at least two binaries" >&2; exit 64; }
bench_bin=$1
pace=()
[[ -n "${RATE:-}" ]] && pace=(--rate "$RATE")
export VERDICT_URL=http://127.0.0.1:39780
ticks=$(getconf CLK_TCK)
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for r in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    work=$(mktemp -d /tmp/verdict-bench-ab.XXXXXX)
    "$bin" serve --data-dir "$work/data" --listen 127.0.0.1:39780 --peer-listen 127.0.0.1:39781 >"$work/node.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do curl -sf "$VERDICT_URL/readyz" >/dev/null && break; sleep 0.1; done
    "$bin" schema put examples/surfconext/schema.cedarschema >/dev/null
    "$bin" policy load examples/surfconext/policies.cedar >/dev/null
    "$bin" entity load examples/surfconext/entities.json >/dev/null
    "$bench_bin" bench --mix examples/surfconext/requests.json --connections 32 --duration 2s "${pace[@]}" >/dev/null 2>&1
    before=$(cpu_ticks "$pid")
    report=$("$bench_bin" bench --mix examples/surfconext/requests.json --connections 32 --duration 10s "${pace[@]}" 2>/dev/null)
    after=$(cpu_ticks "$pid")
    rate=$(sed -n 's/^throughput *\([0-9]*\).*/\1/p' <<<"$report")
    cpu_us=$(awk -v t="$((after - before))" -v hz="$ticks" -v n="$rate" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / (n * 10); else print 0 }')
    echo "round $r $bin $rate decisions/s, $cpu_us µs CPU per decision"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$work"
  done
done
