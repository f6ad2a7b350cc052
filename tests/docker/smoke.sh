#!/usr/bin/env bash
# Docker smoke test: builds verdict:local, starts docker-compose.yml (three nodes and the `lb`
# proxy), and checks through the proxy that the cluster forms, a write replicates, and every node
# answers at the written version. Always tears the stack down, volumes included.
#
#   tests/docker/smoke.sh                      # host port 18080
#   SMOKE_PORT=28080 tests/docker/smoke.sh
#   SMOKE_SKIP_BUILD=1 tests/docker/smoke.sh   # reuse an existing verdict:local image
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

port=${SMOKE_PORT:-18080}
deadline_secs=${SMOKE_DEADLINE:-120}
project=verdict-smoke
base="http://127.0.0.1:$port"
# Fixed, so a leftover environment cannot change what the test runs against.
export VERDICT_PORT=$port VERDICT_HOST=127.0.0.1 VERDICT_CLUSTER_SECRET=smoke-test-secret
# The nodes listen beyond loopback, so writes and decisions need a credential: the bootstrap admin.
export VERDICT_ADMIN_SECRET=smoke-test-admin-secret-0123456789
auth="Authorization: Bearer admin.$VERDICT_ADMIN_SECRET"
compose=(docker-compose -p "$project" -f docker-compose.yml)

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

teardown() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        echo "== logs (the test failed)" >&2
        "${compose[@]}" logs --no-color --tail=40 >&2 || true
    fi
    echo "== teardown"
    "${compose[@]}" down -v --remove-orphans || true
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

started=$SECONDS
if [[ ${SMOKE_SKIP_BUILD:-0} != 1 ]]; then
    scripts/docker-build.sh
fi

echo "== start ($project, lb on 127.0.0.1:$port)"
stack_started=$SECONDS
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
trap teardown EXIT
# Followers first: the cluster must form whichever node starts first.
"${compose[@]}" up -d node3 node2
"${compose[@]}" up -d

echo "== wait for /readyz through the lb (deadline ${deadline_secs}s)"
# Round robin sends consecutive connections to consecutive nodes: three 200s in a row mean every
# node knows the leader.
deadline=$((SECONDS + deadline_secs))
in_a_row=0
while ((in_a_row < 3)); do
    ((SECONDS < deadline)) || fail "the cluster was not ready within ${deadline_secs}s"
    code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$base/readyz" || true)
    if [[ $code == 200 ]]; then
        in_a_row=$((in_a_row + 1))
    else
        in_a_row=0
        sleep 0.5
    fi
done
echo "ready $((SECONDS - stack_started)) s after the start"

echo "== without a credential: 401"
expect_status 401 -X PUT "$base/v1/policies/smoke" -H 'content-type: text/plain' \
    --data-binary 'permit(principal, action, resource);' >/dev/null

echo "== write a policy through the lb (the bootstrap admin may still be on its way: retry)"
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

decide() {
    local who=$1
    expect_status 200 "$base/access/v1/evaluation" \
        -H 'content-type: application/json' -H "Verdict-Min-Version: $version" -H "$auth" \
        -d "{\"subject\":{\"type\":\"User\",\"id\":\"$who\"},\"action\":{\"name\":\"read\"},\"resource\":{\"type\":\"Doc\",\"id\":\"1\"}}"
}

echo "== decisions at version $version through the lb (round robin reaches every node)"
for i in 1 2 3 4 5 6; do
    answer=$(decide alice)
    [[ $answer == *'"decision":true'* ]] || fail "alice, request $i: want allow, got $answer"
    [[ $answer =~ \"version\":([0-9]+) ]] || fail "alice, request $i: no version in $answer"
    ((BASH_REMATCH[1] >= version)) ||
        fail "alice, request $i: answered at version ${BASH_REMATCH[1]} < $version"
    answer=$(decide bob)
    [[ $answer == *'"decision":false'* ]] || fail "bob, request $i: want deny, got $answer"
done

echo "PASS: docker smoke in $((SECONDS - started)) s"
