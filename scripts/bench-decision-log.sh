#!/usr/bin/env bash
# HTTP decisions/s with decision logging off, then on (file sink, fsync = "interval" with a 10 ms
# group commit), with the same release binary: one node on loopback, the SURFconext example, the
# same `verdict bench` as docs/benchmarks.md. Prints both throughputs and on/off (issue 5's target:
# on ≥ 0.85 × off). ROUNDS=N repeats the off/on pair N times (default 1): this VM's figures move by
# up to ±30 % between runs, so look at pairs, not at one number.
# Usage: cargo build --release && scripts/bench-decision-log.sh   (about 40 s per round)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VERDICT_BIN:-./target/release/verdict}
ROUNDS=${ROUNDS:-1}
API=127.0.0.1:39480
PEER=127.0.0.1:39481
WORK=$(mktemp -d /tmp/verdict-bench-declog.XXXXXX)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_ready() {
  for _ in $(seq 1 300); do
    curl -sf "http://$API/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "node not ready; its log:" >&2
  tail -20 "$WORK"/*.log >&2
  return 1
}

# Logging on: the target's configuration. Sink files are rotated so a long run stays small on disk.
cat >"$WORK/on.toml" <<EOF
[decision_log]
enabled = true
fsync = "interval"
fsync_interval_ms = 10

[[decision_log.sinks]]
type = "file"
path = "$WORK/decisions.ndjson"
rotate_bytes = 67108864
keep = 1
EOF

# run NAME [serve flags…]: a fresh node, the example loaded, the bench; prints the bench output.
run() {
  local name=$1
  shift
  rm -rf "$WORK/data" "$WORK"/decisions.ndjson*
  $BIN serve --data-dir "$WORK/data" --listen $API --peer-listen $PEER "$@" >"$WORK/$name.log" 2>&1 &
  PID=$!
  wait_ready
  VERDICT_URL=http://$API $BIN schema put examples/surfconext/schema.cedarschema >/dev/null
  VERDICT_URL=http://$API $BIN policy load examples/surfconext/policies.cedar >/dev/null
  VERDICT_URL=http://$API $BIN entity load examples/surfconext/entities.json >/dev/null
  # The node's CPU time (user + system, clock ticks) around the bench: CPU per decision moves far
  # less with the machine's mood than throughput does.
  local t0 t1 hz n
  t0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  VERDICT_URL=http://$API $BIN bench --mix examples/surfconext/requests.json --connections 32 \
    --duration 10s --warmup 2s | tee "$WORK/$name.out"
  t1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  hz=$(getconf CLK_TCK)
  # Warmup requests are served too but not counted in `requests`: add them at the measured rate.
  n=$(sed -n 's/^requests *\([0-9]*\):.*/\1/p' "$WORK/$name.out")
  awk "BEGIN {printf \"node CPU     %.1f us per decision (warmup included at the measured rate)\n\", ($t1 - $t0) / $hz * 1e6 / ($n * 12 / 10)}" | tee -a "$WORK/$name.out"
  if [ "$name" != off ]; then
    # Every decision of the run must have been logged and (within a few seconds) delivered.
    for _ in $(seq 1 100); do
      curl -sf "http://$API/v1/decision-logs/status" >"$WORK/status.json"
      grep -q '"lag":0,' "$WORK/status.json" && break
      sleep 0.1
    done
    sed -n 's/.*"appended":\([0-9]*\).*"drops":\({[^}]*}\).*"lag":\([0-9]*\).*/logged       \1 records; drops \2; file sink lag \3/p' \
      "$WORK/status.json"
    echo
  fi
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
}

throughput() { sed -n 's/^throughput *\([0-9]*\) req\/s.*/\1/p' "$WORK/$1.out"; }

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: decision logging off"
  run off
  echo "== round $round: decision logging on (file sink, 10 ms group commit)"
  run on --config "$WORK/on.toml"
  OFF=$(throughput off)
  ON=$(throughput on)
  echo "== round $round: off $OFF decisions/s, on $ON decisions/s, on/off = $(awk "BEGIN {printf \"%.3f\", $ON / $OFF}") (target ≥ 0.85)"
  COFF=$(sed -n 's/^node CPU *\([0-9.]*\).*/\1/p' "$WORK/off.out")
  CON=$(sed -n 's/^node CPU *\([0-9.]*\).*/\1/p' "$WORK/on.out")
  echo "== round $round: node CPU per decision: off $COFF us, on $CON us, on/off = $(awk "BEGIN {printf \"%.3f\", $CON / $COFF}")"
done
