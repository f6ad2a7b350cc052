#!/usr/bin/env bash
# Node memory per revocation event: loads 1,000,000 events (the mix of scripts/bench-tokens.sh) into
# a release node that snapshots every 40 entries (so the log is purged), then restarts it from its
# data and prints the resident memory over an empty node, per event.
# Usage: cargo build --release && scripts/bench-revocation-memory.sh   (about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VERDICT_BIN:-./target/release/verdict}; W=$(mktemp -d); API=127.0.0.1:39680; export VERDICT_URL=http://$API
start() { $BIN serve --data-dir $W/data --listen $API --peer-listen 127.0.0.1:39681 --snapshot-every 40 --keep-log-behind-snapshot 5 > $W/log 2>&1 & PID=$!; for _ in $(seq 1 600); do curl -sf $VERDICT_URL/readyz >/dev/null && break; sleep 0.1; done; }
rss() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
start; $BIN keys rotate >/dev/null; sleep 1; echo "empty: $(rss) KiB"; base=$(rss)
python3 - $W <<'PY'
import json, sys
w = sys.argv[1]
for b in range(100):
    ev = []
    for j in range(10000):
        i = b*10000+j; k = i % 10
        if k == 0: ev.append({"by": "audit_chain", "chain": f"0190c8a2-7b1e-7{i%4096:03x}-8{(i//4096)%4096:03x}-{i:012x}"})
        elif k == 1: ev.append({"by": "subject", "sub": f"gone-{i}@example.org"})
        elif k == 2: ev.append({"by": "subject_scope", "sub": f"gone-{i}@example.org", "scope": f"project-{i%1000}"})
        else: ev.append({"by": "token", "jti": f"0190c8a2-7b1e-7{i%4096:03x}-8{(i//4096)%4096:03x}-{i:012x}"})
    json.dump(ev, open(f"{w}/r{b}.json", "w"))
PY
for b in $(seq 0 99); do curl -sf -X POST $VERDICT_URL/v1/revocations -H 'content-type: application/json' --data-binary @$W/r$b.json >/dev/null; done
sleep 3; echo "loaded: $(rss) KiB"
kill $PID; wait $PID 2>/dev/null || true
du -sh $W/data/*; ls $W/data
start; sleep 2; after=$(rss); echo "restarted: $after KiB; $(( (after-base)*1024/1000000 )) bytes per event over the empty node"
kill $PID; rm -rf $W
