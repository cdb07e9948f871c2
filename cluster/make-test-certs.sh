#!/usr/bin/env bash
# Make self-signed TLS certificates for a TEST dmf/Dask cluster with the openssl CLI:
#   ca.pem / ca-key.pem   a throwaway certificate authority (10 days, CA:TRUE)
#   dask.pem / dask-key.pem  one certificate for scheduler, workers and clients, signed by
#                            the CA, SAN IP:127.0.0.1, DNS:localhost (plus any extra SANs),
#                            extendedKeyUsage serverAuth + clientAuth (Dask TLS is mutual).
# Never use these for a real cluster: the CA key sits next to the certificates.
set -euo pipefail

usage() {
    cat <<USAGE
usage: $(basename "$0") OUTPUT_DIR [EXTRA_SAN ...]

Writes ca.pem, ca-key.pem, dask.pem and dask-key.pem into OUTPUT_DIR (created if absent;
existing files are overwritten). EXTRA_SAN entries are added to the certificate's
subjectAltName, e.g. DNS:scheduler.example.org or IP:10.0.0.5.

example:
  $(basename "$0") /tmp/dmf-certs
  dask scheduler --protocol tls --tls-ca-file /tmp/dmf-certs/ca.pem \\
      --tls-cert /tmp/dmf-certs/dask.pem --tls-key /tmp/dmf-certs/dask-key.pem
USAGE
}

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    usage
    exit 0
fi
if [[ $# -lt 1 ]]; then
    usage >&2
    exit 2
fi
command -v openssl >/dev/null || { echo "$(basename "$0"): openssl not found on PATH" >&2; exit 1; }

out_dir=$1
shift
san="IP:127.0.0.1,DNS:localhost"
for extra in "$@"; do
    san="$san,$extra"
done
days=10

mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

# Run openssl quietly (it prints key-generation progress to stderr); show its output on failure.
quiet() {
    if ! "$@" >"$work/log" 2>&1; then
        echo "$(basename "$0"): failed: $*" >&2
        cat "$work/log" >&2
        exit 1
    fi
}

cat >"$work/ca.ext" <<EXT
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EXT
cat >"$work/leaf.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT

# The CA: a key, a CSR, self-signed with the CA extensions.
quiet openssl req -new -newkey rsa:2048 -nodes -keyout "$work/ca-key.pem" \
    -subj "/CN=dmf test CA" -out "$work/ca.csr"
quiet openssl x509 -req -in "$work/ca.csr" -signkey "$work/ca-key.pem" -days "$days" -sha256 \
    -extfile "$work/ca.ext" -out "$work/ca.pem"

# The cluster certificate, signed by the CA.
quiet openssl req -new -newkey rsa:2048 -nodes -keyout "$work/dask-key.pem" \
    -subj "/CN=dmf-dask" -out "$work/dask.csr"
quiet openssl x509 -req -in "$work/dask.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 \
    -extfile "$work/leaf.ext" -out "$work/dask.pem"

quiet openssl verify -CAfile "$work/ca.pem" -purpose sslserver "$work/dask.pem" >/dev/null
quiet openssl verify -CAfile "$work/ca.pem" -purpose sslclient "$work/dask.pem" >/dev/null

for name in ca.pem ca-key.pem dask.pem dask-key.pem; do
    mv -f "$work/$name" "$out_dir/$name"
done
chmod 644 "$out_dir/ca.pem" "$out_dir/dask.pem"
chmod 600 "$out_dir/ca-key.pem" "$out_dir/dask-key.pem"
echo "wrote $out_dir/{ca.pem,ca-key.pem,dask.pem,dask-key.pem} (SAN $san, valid $days days)"
