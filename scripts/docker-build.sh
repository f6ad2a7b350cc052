#!/usr/bin/env bash
# Builds the `verdict:local` image: a static `verdict` binary built here, copied into a `FROM scratch`
# image (no image can be pulled on our machines, so there is no builder stage; see Dockerfile).
# Then builds `verdict-haproxy:local`, the load balancer of docker-compose.yml, with
# scripts/haproxy-image.sh (seconds), so one command makes everything `docker-compose up` needs.
#
#   scripts/docker-build.sh            # image tag verdict:local
#   IMAGE=verdict:dev scripts/docker-build.sh
#
# The static build uses its own target dir (default target/static) so it neither invalidates nor
# locks the ordinary target/ build; set CARGO_TARGET_DIR to put it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-verdict:local}
triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-target/static}

echo "== static build (CARGO_TARGET_DIR=$target_dir)"
start=$SECONDS
# No debug info: the image strips it anyway, and it triples the size of the target dir.
CARGO_PROFILE_RELEASE_DEBUG=0 RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --locked --target "$triple" --bin verdict
binary="$target_dir/$triple/release/verdict"
echo "built in $((SECONDS - start)) s"

# A dynamically linked binary would start on the host and then fail in the image with a bare
# "no such file or directory" (no loader in scratch): refuse it here with a clear message.
if readelf -l "$binary" | grep -q 'program interpreter'; then
    echo "error: $binary is dynamically linked; the image needs a static binary (crt-static)" >&2
    exit 1
fi

# The release profile keeps debug info for profiling; the image does not need it (~170 MB -> ~25 MB).
mkdir -p target/docker/data
if command -v strip >/dev/null; then
    strip -o target/docker/verdict "$binary"
else
    cp "$binary" target/docker/verdict
fi

echo "== docker build -t $image"
docker build -t "$image" .
docker image ls "$image"

scripts/haproxy-image.sh
