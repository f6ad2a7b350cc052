# Verdict as a `FROM scratch` image: nothing but the static `verdict` binary.
#
# No base or builder image can be pulled on our machines, so the binary is built on the host and
# copied in. Build with scripts/docker-build.sh, which runs
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu
# (a static-pie executable), strips it into target/docker/verdict and runs
#   docker build -t verdict:local .
# .dockerignore sends only target/docker/ as the build context.
#
# Name resolution works without NSS modules: glibc >= 2.34 has its `files` and `dns` lookups built
# in, so the static binary resolves compose service names through /etc/hosts and /etc/resolv.conf,
# which Docker mounts into every container (docs/containers.md).
FROM scratch

COPY target/docker/verdict /verdict
# Owned by the unprivileged user below; a named volume mounted here starts with this ownership.
COPY --chown=65532:65532 target/docker/data/ /data/

USER 65532:65532
VOLUME ["/data"]
# 8080: the public API; 8081: the Raft peer listener (keep it on a private network).
EXPOSE 8080 8081

ENTRYPOINT ["/verdict"]
# A single node reachable from outside the container; docker-compose.yml passes a cluster's flags.
CMD ["serve", "--listen", "0.0.0.0:8080", "--peer-listen", "0.0.0.0:8081", "--data-dir", "/data"]
