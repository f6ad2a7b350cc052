#!/usr/bin/env bash
# Builds the `verdict-haproxy:local` image, the load balancer of docker-compose.yml, offline: no
# image can be pulled on our machines, so it is Debian's `haproxy` package (installed here by
# scripts/ensure-haproxy.sh when missing) copied into a `FROM scratch` image with the libraries
# `ldd` lists and the dynamic loader (docker/haproxy/Dockerfile). Takes seconds.
#
#   scripts/haproxy-image.sh                          # nodes node1..node3:8080, as in compose
#                                                     # (checked on their health listener, 8082)
#   HAPROXY_CFG=my-haproxy.cfg scripts/haproxy-image.sh   # bake in another configuration
#   HAPROXY_IMAGE=verdict-haproxy:dev scripts/haproxy-image.sh
#   scripts/haproxy-image.sh --print-config           # only print the generated configuration
#
# scripts/docker-build.sh runs it after building verdict:local.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${HAPROXY_IMAGE:-verdict-haproxy:local}

# The compose configuration: round robin over node1..node3, checked on their health listener.
compose_config() {
    scripts/haproxy-cfg.sh --docker-dns --check-port 8082 --listen 0.0.0.0:8080 --stats 0.0.0.0:8404 \
        node1=node1:8080 node2=node2:8080 node3=node3:8080
}
if [[ ${1:-} == --print-config ]]; then
    compose_config
    exit 0
fi
context=target/haproxy-image
rootfs=$context/rootfs

haproxy=$(scripts/ensure-haproxy.sh)
"$haproxy" -v | sed -n 1p

rm -rf "$context"
mkdir -p "$rootfs/usr/sbin" "$rootfs/etc/haproxy"
cp "$haproxy" "$rootfs/usr/sbin/haproxy"

# `ldd` prints `libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x…)` for each library and the
# loader as a bare path; linux-vdso comes from the kernel and has no file. Each file goes to the
# same path in the image, where the loader's built-in search directories find it without a
# ld.so.cache. cp -L: /lib64/ld-linux-x86-64.so.2 and most libraries are symlinks on the host.
libraries=$(ldd "$haproxy")
if grep -q 'not found' <<<"$libraries"; then
    echo "error: ldd $haproxy cannot find every library:" >&2
    grep 'not found' <<<"$libraries" >&2
    exit 1
fi
paths=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libraries")
grep -q '/ld-linux' <<<"$paths" || { echo "error: ldd listed no dynamic loader for $haproxy" >&2; exit 1; }
while read -r path; do
    mkdir -p "$rootfs$(dirname "$path")"
    cp -L "$path" "$rootfs$path"
done <<<"$paths"
echo "copied $haproxy and $(wc -l <<<"$paths") libraries (the loader included)"

config=$rootfs/etc/haproxy/haproxy.cfg
if [[ -n ${HAPROXY_CFG:-} ]]; then
    echo "using the configuration $HAPROXY_CFG"
    cp "$HAPROXY_CFG" "$config"
else
    compose_config >"$config"
fi
# Files in the image belong to root; HAProxy runs as 65534 and only reads them.
chmod -R a+rX "$rootfs"

cp docker/haproxy/Dockerfile "$context/Dockerfile"
echo "== docker build -t $image"
docker build -q -t "$image" "$context"
# Proves the image is whole (loader, every library) and that the configuration parses in it. The
# compose names do not resolve outside the compose network; --docker-dns tolerates that.
docker run --rm "$image" -c -f /etc/haproxy/haproxy.cfg
docker image ls "$image"
