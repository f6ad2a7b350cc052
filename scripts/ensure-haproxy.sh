#!/usr/bin/env bash
# Makes sure Debian's `haproxy` package is installed and prints the path of the binary.
#
#   haproxy=$(scripts/ensure-haproxy.sh)
#
# Idempotent: does nothing when haproxy is already installed. Otherwise it installs the package
# with apt-get, which needs root (CI and our machines run as root). Used by scripts/haproxy-image.sh
# (the compose load balancer is built from this binary) and by .ci/run, so nothing depends on a
# package that someone installed by hand.
set -euo pipefail

find_haproxy() {
    command -v haproxy 2>/dev/null || { [[ -x /usr/sbin/haproxy ]] && echo /usr/sbin/haproxy; }
}

if ! find_haproxy >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: haproxy is not installed and installing it needs root: apt-get install -y haproxy" >&2
        exit 1
    fi
    echo "== apt-get install haproxy (Debian's package)" >&2
    # Progress to stderr: stdout carries only the binary's path.
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy >&2
fi
find_haproxy || { echo "error: haproxy is still not found after apt-get install" >&2; exit 1; }
