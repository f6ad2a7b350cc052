#!/usr/bin/env bash
# Instructions per decision, counted by valgrind's callgrind: deterministic, so unlike decisions/s
# it does not move with the machine's load, and binaries built from different commits compare on a
# busy machine. For each binary: a fresh single node under callgrind with the SURFconext example,
# 500 warm-up decisions, counters zeroed, N decisions (8 connections), counters dumped.
# Prints instructions per decision; the profiles stay in OUT (callgrind_annotate reads them).
# Usage: [N=4000] [OUT=/tmp/verdict-callgrind] scripts/bench-decisions-instructions.sh BIN [BIN…]
# (about a minute per binary; needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
(($# >= 1)) || { echo "usage: $0 BIN [BIN…]" >&2; exit 64; }
n=${N:-4000}
out=${OUT:-/tmp/verdict-callgrind}
mkdir -p "$out"
export VERDICT_URL=http://127.0.0.1:39790
for bin in "$@"; do
  name=$(basename "$bin")
  work=$(mktemp -d /tmp/verdict-callgrind.XXXXXX)
  rm -f "$out/$name.out"*
  valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" \
    "$bin" serve --data-dir "$work/data" --listen 127.0.0.1:39790 --peer-listen 127.0.0.1:39791 \
    >"$work/node.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "$VERDICT_URL/readyz" >/dev/null && break; sleep 0.2; done
  "$bin" schema put examples/surfconext/schema.cedarschema >/dev/null
  "$bin" policy load examples/surfconext/policies.cedar >/dev/null
  "$bin" entity load examples/surfconext/entities.json >/dev/null
  "$bin" bench --mix examples/surfconext/requests.json --connections 8 --requests 500 >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1
  "$bin" bench --mix examples/surfconext/requests.json --connections 8 --requests "$n" 2>/dev/null |
    grep -q " 0 non-200, 0 errors" || echo "$name: some decisions failed" >&2
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  total=$(sed -n 's/^summary: //p' "$out/$name.out.1")
  echo "$name $((total / n)) instructions per decision ($out/$name.out.1)"
  rm -rf "$work"
done
