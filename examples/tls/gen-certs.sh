#!/usr/bin/env bash
# Makes a CA and one certificate per node for a TLS cluster on loopback (examples/tls/README.md).
#
#   examples/tls/gen-certs.sh [DIR] [NAME...]
#
# DIR (default ./certs) gets ca.pem and ca-key.pem (made once, reused when present) and, for
# each NAME (default node1 node2 node3), NAME.pem and NAME-key.pem: an ECDSA P-256 certificate
# signed by the CA, with a random serial, CN=NAME, subjectAltName $SAN (default
# IP:127.0.0.1,DNS:localhost) and both serverAuth and clientAuth, so one certificate serves a
# node's API listener, its peer listener and its client side of peer mutual TLS.
# Run it again with a new NAME to get a replacement certificate from the same CA (rotation).
set -euo pipefail

dir=${1:-certs}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(node1 node2 node3)
san=${SAN:-IP:127.0.0.1,DNS:localhost}
days=${DAYS:-825}

command -v openssl >/dev/null || { echo "gen-certs.sh: needs the openssl command" >&2; exit 1; }
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca-key.pem" ]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days 3650 -subj "/CN=Verdict example CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made $dir/ca.pem"
fi

ext=$(mktemp)
csr=$(mktemp)
trap 'rm -f "$ext" "$csr"' EXIT
cat >"$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
EXT

for name in "${names[@]}"; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/$name-key.pem.tmp" -out "$csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$ext" \
    -out "$dir/$name.pem.tmp" 2>/dev/null
  # Renamed into place only when both exist: a node reloading on SIGHUP never sees half a pair
  # from this script (it can still see a new key with the old certificate between the two
  # renames, which it refuses and logs; send SIGHUP after the script finishes).
  mv "$dir/$name-key.pem.tmp" "$dir/$name-key.pem"
  mv "$dir/$name.pem.tmp" "$dir/$name.pem"
  echo "made $dir/$name.pem ($san)"
done
