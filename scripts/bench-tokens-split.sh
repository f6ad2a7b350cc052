#!/usr/bin/env bash
# Splits issue #4's introspection ratio (scripts/bench-tokens.sh) into its parts, on one release
# node: decisions with a token and the same decisions without one (subject given directly), with no
# revocation events, with 1,000,000 loaded, and again after restarting the node from its data.
# If plain decisions drop as much as token ones, the drop is not the token path.
# Usage: cargo build --release && scripts/bench-tokens-split.sh   (about 90 s)
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
tp() { sed -n 's/^throughput *\([0-9]*\) req\/s.*/\1/p'; }

echo "== no revocation events stored (node RSS $(rss) KiB)"
T0=$(bench | tp); P0=$(plainbench | tp); echo "none: token $T0 plain $P0"

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

T1=$(bench | tp); P1=$(plainbench | tp); echo "1M: token $T1 plain $P1"
kill $PID; wait $PID 2>/dev/null || true
$BIN serve --data-dir "$WORK/data" --listen $API --peer-listen 127.0.0.1:39581 >"$WORK/node2.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do curl -sf "$VERDICT_URL/readyz" >/dev/null && break; sleep 0.1; done
echo "restarted: RSS $(rss) KiB"
T2=$(bench | tp); P2=$(plainbench | tp); echo "1M restarted: token $T2 plain $P2"
awk "BEGIN {printf \"ratios: token 1M/none %.3f, plain 1M/none %.3f, token restarted/none %.3f, plain restarted/none %.3f\\n\", $T1/$T0, $P1/$P0, $T2/$T0, $P2/$P0}"
exit 0
