#!/usr/bin/env bash
# Docker smoke test: builds verdict:local and verdict-haproxy:local, starts docker-compose.yml (three
# nodes behind HAProxy) and checks, through HAProxy only, that:
#   - HAProxy's health checks (`GET /readyz`) see every node UP (its stats page, `/stats;csv`);
#   - the cluster forms, a write replicates, and every node answers decisions at the written version;
#   - a stopped node is marked DOWN within a deadline while decisions through HAProxy, sent without
#     pause from before the stop until after DOWN, all answer 200;
#   - the node, started again, is marked UP again and answers.
# Always tears the stack down, volumes included.
#
#   tests/docker/smoke.sh                      # API on 127.0.0.1:18080, stats on 127.0.0.1:18404
#   SMOKE_PORT=28080 SMOKE_STATS_PORT=28404 tests/docker/smoke.sh
#   SMOKE_SKIP_BUILD=1 tests/docker/smoke.sh   # reuse verdict:local; rebuild only the HAProxy image
#   SMOKE_SKIP_BUILD=1 HAPROXY_CFG=doctored.cfg tests/docker/smoke.sh   # another HAProxy config
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

port=${SMOKE_PORT:-18080}
stats_port=${SMOKE_STATS_PORT:-18404}
deadline_secs=${SMOKE_DEADLINE:-120}
project=verdict-smoke
base="http://127.0.0.1:$port"
stats="http://127.0.0.1:$stats_port/stats;csv"
# Fixed, so a leftover environment cannot change what the test runs against.
export VERDICT_PORT=$port VERDICT_HOST=127.0.0.1 HAPROXY_STATS_PORT=$stats_port
export VERDICT_CLUSTER_SECRET=smoke-test-secret
# The nodes listen beyond loopback, so writes and decisions need a credential: the bootstrap admin.
export VERDICT_ADMIN_SECRET=smoke-test-admin-secret-0123456789
auth="Authorization: Bearer admin.$VERDICT_ADMIN_SECRET"
compose=(docker-compose -p "$project" -f docker-compose.yml)
work=$(mktemp -d)
load_pid=

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

teardown() {
    local status=$?
    [[ -n $load_pid ]] && kill "$load_pid" 2>/dev/null
    if [[ $status -ne 0 ]]; then
        echo "== logs (the test failed)" >&2
        "${compose[@]}" logs --no-color --tail=40 >&2 || true
        echo "== HAProxy's view" >&2
        curl -s --max-time 2 "$stats" | cut -d, -f1,2,18,37,38 >&2 || true
    fi
    echo "== teardown"
    "${compose[@]}" down -v --remove-orphans || true
    rm -rf "$work"
    exit "$status"
}

# curl with the status code on the last line; never fails on an HTTP error status.
request() {
    curl -sS --max-time 10 -w '\n%{http_code}' "$@"
}

# Prints the body of a request's answer and checks its status code.
expect_status() {
    local want=$1
    shift
    local out body code
    out=$(request "$@") || fail "curl $* failed"
    code=${out##*$'\n'}
    body=${out%$'\n'*}
    [[ $code == "$want" ]] || fail "curl $* answered $code, want $want: $body"
    printf '%s' "$body"
}

# A column of HAProxy's CSV statistics for one server of backend `verdict`, found by the header's
# name (`status`: UP, DOWN, "UP 1/2", …; `check_status`: L7OK, L4CON, …; `stot`: requests sent).
# Prints nothing while the stats page does not answer.
server_stat() {
    local server=$1 column=$2
    { curl -s --max-time 2 "$stats" || true; } | awk -F, -v server="$server" -v column="$column" '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) if ($i == column) c = i; next }
        c && $1 == "verdict" && $2 == server { print $c }'
}

# Waits until HAProxy reports `want` (exactly) as a server's status. UP counts only once a check
# has passed (L7OK): HAProxy starts its servers as UP before it has checked them.
wait_server() {
    local server=$1 want=$2 secs=$3
    local deadline state check
    deadline=$((SECONDS + secs))
    while true; do
        state=$(server_stat "$server" status)
        check=$(server_stat "$server" check_status)
        [[ $state == "$want" && ($want != UP || $check == L7OK) ]] && break
        ((SECONDS < deadline)) ||
            fail "HAProxy did not mark $server $want within ${secs}s (status '$state', check '$check')"
        sleep 0.1
    done
}

# Milliseconds since a `date +%s%N` reading.
ms_since() {
    echo $((($(date +%s%N) - $1) / 1000000))
}

started=$SECONDS
echo "== docs/containers.md shows the HAProxy configuration the image runs"
diff <(scripts/haproxy-image.sh --print-config) \
    <(awk '/^```haproxy$/ { shown = 1; next } shown && /^```$/ { exit } shown' docs/containers.md) ||
    fail "the configuration in docs/containers.md differs from scripts/haproxy-image.sh --print-config (< generated, > shown)"

if [[ ${SMOKE_SKIP_BUILD:-0} == 1 ]]; then
    scripts/haproxy-image.sh
else
    scripts/docker-build.sh
fi

echo "== start ($project: API on 127.0.0.1:$port, HAProxy stats on 127.0.0.1:$stats_port)"
stack_started=$SECONDS
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
trap teardown EXIT
# Followers first: the cluster must form whichever node starts first.
"${compose[@]}" up -d node3 node2
"${compose[@]}" up -d

echo "== wait until HAProxy's /readyz checks see every node UP (deadline ${deadline_secs}s)"
for node in node1 node2 node3; do
    wait_server "$node" UP "$((deadline_secs - (SECONDS - stack_started)))"
    echo "$node: $(server_stat "$node" status), check $(server_stat "$node" check_status)"
done
echo "ready $((SECONDS - stack_started)) s after the start"
expect_status 200 "$base/readyz" >/dev/null

echo "== without a credential: 401"
expect_status 401 -X PUT "$base/v1/policies/smoke" -H 'content-type: text/plain' \
    --data-binary 'permit(principal, action, resource);' >/dev/null

echo "== write a policy through HAProxy (the bootstrap admin may still be on its way: retry)"
deadline=$((SECONDS + 30))
until [[ $(curl -s -o /dev/null --max-time 2 -w "%{http_code}" -H "$auth" "$base/v1/credentials" || true) == 200 ]]; do
    ((SECONDS < deadline)) || fail "the bootstrap admin credential never worked"
    sleep 0.5
done
body=$(expect_status 200 -X PUT "$base/v1/policies/smoke" -H "$auth" -H 'content-type: text/plain' \
    --data-binary 'permit(principal == User::"alice", action == Action::"read", resource);')
version=$(printf '%s' "$body" | sed -n 's/.*"version":[[:space:]]*\([0-9][0-9]*\).*/\1/p')
[[ -n $version ]] || fail "the write answered no version: $body"
echo "version $version"

decision_body() {
    printf '{"subject":{"type":"User","id":"%s"},"action":{"name":"read"},"resource":{"type":"Doc","id":"1"}}' "$1"
}

decide() {
    local who=$1
    expect_status 200 "$base/access/v1/evaluation" \
        -H 'content-type: application/json' -H "Verdict-Min-Version: $version" -H "$auth" \
        -d "$(decision_body "$who")"
}

# Six allows and six denies, each checked, at the written version or later.
decide_round() {
    local label=$1 i answer
    for i in 1 2 3 4 5 6; do
        answer=$(decide alice)
        [[ $answer == *'"decision":true'* ]] || fail "$label, alice, request $i: want allow, got $answer"
        [[ $answer =~ \"version\":([0-9]+) ]] || fail "$label, alice, request $i: no version in $answer"
        ((BASH_REMATCH[1] >= version)) ||
            fail "$label, alice, request $i: answered at version ${BASH_REMATCH[1]} < $version"
        answer=$(decide bob)
        [[ $answer == *'"decision":false'* ]] || fail "$label, bob, request $i: want deny, got $answer"
    done
}

declare -A sent_before
for node in node1 node2 node3; do
    sent_before[$node]=$(server_stat "$node" stot)
done
echo "== decisions at version $version through HAProxy (round robin per request)"
decide_round "all nodes up"
for node in node1 node2 node3; do
    sent=$(($(server_stat "$node" stot) - sent_before[$node]))
    echo "$node answered $sent of 12"
    ((sent > 0)) || fail "HAProxy sent no decision to $node"
done

# Decisions without pause, one line per answer ("200" or "CODE body"), until $work/stop exists.
decide_without_pause() {
    local deadline=$((SECONDS + 120)) code
    while [[ ! -e $work/stop ]] && ((SECONDS < deadline)); do
        code=$(curl -s -o "$work/body" --max-time 10 -w '%{http_code}' "$base/access/v1/evaluation" \
            -H 'content-type: application/json' -H "Verdict-Min-Version: $version" -H "$auth" \
            -d "$(decision_body alice)" || true)
        if [[ $code == 200 ]]; then
            echo 200
        else
            echo "$code $(cat "$work/body" 2>/dev/null)"
        fi
    done >"$work/answers"
}

echo "== stop node1 under a steady stream of decisions through HAProxy"
decide_without_pause &
load_pid=$!
deadline=$((SECONDS + 30))
until [[ -s $work/answers ]]; do
    ((SECONDS < deadline)) || fail "the decision stream never started"
    sleep 0.1
done
# The stop runs beside the poll, so the time to DOWN is measured from SIGTERM, not from the exit.
stop_started=$(date +%s%N)
"${compose[@]}" stop -t 10 node1 >"$work/stop.log" 2>&1 &
stop_pid=$!
wait_server node1 DOWN 30
echo "HAProxy marked node1 DOWN $(ms_since "$stop_started") ms after the stop began (polled every 100 ms)"
wait "$stop_pid" || { cat "$work/stop.log" >&2; fail "docker-compose stop node1 failed"; }
echo "node1 had exited $(ms_since "$stop_started") ms after the stop began"
echo "node1: check $(server_stat node1 check_status)"
decide_round "node1 down"
# A few more from the stream, all after DOWN.
before=$(wc -l <"$work/answers")
deadline=$((SECONDS + 30))
until (($(wc -l <"$work/answers") >= before + 20)); do
    ((SECONDS < deadline)) || fail "the decision stream stalled after node1 went DOWN"
    sleep 0.1
done
touch "$work/stop"
wait "$load_pid" || true
load_pid=
total=$(wc -l <"$work/answers")
failed=$(grep -vc '^200$' "$work/answers" || true)
echo "decisions during the stop: $total sent, $failed not 200"
if ((failed > 0)); then
    grep -v '^200$' "$work/answers" | sort | uniq -c | head -n 5 >&2
    fail "$failed of $total decisions through HAProxy failed while node1 stopped"
fi

echo "== start node1 again: HAProxy marks it UP once /readyz answers 200 twice"
start_started=$(date +%s%N)
"${compose[@]}" start node1
wait_server node1 UP "$deadline_secs"
echo "HAProxy marked node1 UP $(ms_since "$start_started") ms after its start"
sent_before[node1]=$(server_stat node1 stot)
decide_round "node1 back"
(($(server_stat node1 stot) > sent_before[node1])) || fail "HAProxy sent no decision to node1 after it came back"

echo "PASS: docker smoke in $((SECONDS - started)) s"
