#!/usr/bin/env bash
# Issue #4's introspection target: decisions/s for requests that carry a token (validated on the node:
# key look-up, MAC, expiry, revocation check, then the Cedar evaluation) with no revocation events
# stored, then with 1,000,000 stored (100 writes of 10,000 events: 70 % token ids, 10 % audit chains,
# 10 % subjects, 10 % subject + scope), on one release node. Also prints the node's resident memory
# before and after loading the events.
# Usage: cargo build --release && scripts/bench-tokens.sh   (a few minutes)
# CONTROL=1 skips loading the events: the two benches then differ only in their order.
# PERF=FILE records a flat perf profile of the node during the second bench.
# SPLIT=1 also benches the same decisions without a token (subject given directly) before and after
# loading, then restarts the node from its data and benches both again: if plain decisions drop as
# much as token ones, the drop is not the token path.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VERDICT_BIN:-./target/release/verdict}
API=127.0.0.1:39580
WORK=$(mktemp -d /tmp/verdict-bench-tokens.XXXXXX)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
export VERDICT_URL=http://$API

$BIN serve --data-dir "$WORK/data" --listen $API --peer-listen 127.0.0.1:39581 >"$WORK/node.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do curl -sf "$VERDICT_URL/readyz" >/dev/null && break; sleep 0.1; done
echo 'permit(principal, action == Action::"read", resource) when { principal has scope && resource has project && principal.scope == resource.project };' \
  | $BIN policy load - >/dev/null
$BIN keys rotate >/dev/null

# 36 tokens (none of them revoked), one request each.
python3 - "$WORK/mix.json" <<'PY' > "$WORK/issue.sh"
import json, sys
print("set -e")
for i in range(36):
    print(f'$BIN --output json token issue user-{i} --scope proj-{i % 6} > "$WORK/t{i}.json"')
PY
BIN=$BIN WORK=$WORK bash "$WORK/issue.sh"
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
mix = []
for i in range(36):
    token = json.load(open(f"{work}/t{i}.json"))["token"]
    mix.append({"subject": {"type": "User", "id": "-", "properties": {"token": token}},
                "action": {"name": "read"},
                "resource": {"type": "Volume", "id": f"v{i}", "properties": {"project": f"proj-{i % 6}"}}})
json.dump(mix, open(f"{work}/mix.json", "w"))
plain = []
for i in range(36):
    plain.append({"subject": {"type": "User", "id": f"user-{i}", "properties": {"scope": f"proj-{i % 6}"}},
                  "action": {"name": "read"},
                  "resource": {"type": "Volume", "id": f"v{i}", "properties": {"project": f"proj-{i % 6}"}}})
json.dump(plain, open(f"{work}/plain.json", "w"))
PY

rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
bench() { $BIN bench --mix "$WORK/mix.json" --connections 32 --duration 10s --warmup 2s; }
plainbench() { $BIN bench --mix "$WORK/plain.json" --connections 32 --duration 10s --warmup 2s; }
rate() { sed -n 's/^throughput *\([0-9]*\) req\/s.*/\1/p' "$@"; }

echo "== no revocation events stored (node RSS $(rss) KiB)"
bench | tee "$WORK/none.out"
[ -n "${SPLIT:-}" ] && plainbench >"$WORK/plain-none.out"

echo "== loading 1,000,000 revocation events (100 writes of 10,000)"
before=$(rss)
start=$(date +%s.%N)
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
for b in range(100):
    events = []
    for j in range(10_000):
        i = b * 10_000 + j
        k = i % 10
        if k == 0:
            events.append({"by": "audit_chain", "chain": f"0190c8a2-7b1e-7{i % 4096:03x}-8{(i // 4096) % 4096:03x}-{i:012x}"})
        elif k == 1:
            events.append({"by": "subject", "sub": f"gone-{i}@example.org"})
        elif k == 2:
            events.append({"by": "subject_scope", "sub": f"gone-{i}@example.org", "scope": f"project-{i % 1000}"})
        else:
            events.append({"by": "token", "jti": f"0190c8a2-7b1e-7{i % 4096:03x}-8{(i // 4096) % 4096:03x}-{i:012x}"})
    json.dump(events, open(f"{work}/rev{b}.json", "w"))
PY
for b in $(seq 0 99); do
  [ -n "${CONTROL:-}" ] && break
  curl -sf -X POST "$VERDICT_URL/v1/revocations" -H 'content-type: application/json' \
    --data-binary @"$WORK/rev$b.json" >/dev/null
done
end=$(date +%s.%N)
total=$(curl -sf "$VERDICT_URL/v1/revocations?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
after=$(rss)
[ -n "${CONTROL:-}" ] && total=1
awk "BEGIN {printf \"loaded %d events in %.1f s; node RSS %d → %d KiB, %.1f bytes per event\n\", $total, $end - $start, $before, $after, ($after - $before) * 1024 / $total}"

echo "== 1,000,000 revocation events stored"
if [ -n "${PERF:-}" ]; then
  (sleep 4; perf record -F 999 -p "$PID" -o "$PERF" -- sleep 5 >/dev/null 2>&1) &
fi
bench | tee "$WORK/full.out"

none=$(rate "$WORK/none.out")
full=$(rate "$WORK/full.out")
awk "BEGIN {printf \"== decisions with tokens: none %d/s, 1M revocations %d/s, ratio %.3f (target ≥ 0.95)\n\", $none, $full, $full / $none}"

if [ -n "${SPLIT:-}" ]; then
  plainbench >"$WORK/plain-full.out"
  kill "$PID"; wait "$PID" 2>/dev/null || true
  $BIN serve --data-dir "$WORK/data" --listen $API --peer-listen 127.0.0.1:39581 >"$WORK/node2.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do curl -sf "$VERDICT_URL/readyz" >/dev/null && break; sleep 0.1; done
  echo "== restarted from its data (node RSS $(rss) KiB)"
  bench >"$WORK/restarted.out"
  plainbench >"$WORK/plain-restarted.out"
  p0=$(rate "$WORK/plain-none.out"); p1=$(rate "$WORK/plain-full.out")
  t2=$(rate "$WORK/restarted.out"); p2=$(rate "$WORK/plain-restarted.out")
  awk "BEGIN {printf \"== split: plain none %d/s, 1M %d/s, ratio %.3f; restarted: token %.3f, plain %.3f of none\n\", $p0, $p1, $p1 / $p0, $t2 / $none, $p2 / $p0}"
fi
