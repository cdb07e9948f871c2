#!/usr/bin/env bash
# Start a dmf Dask scheduler in the foreground (exec: the dask process keeps this PID, so
# systemd, supervisors and tests can signal it directly).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<USAGE
usage: $(basename "$0") [--tls-dir DIR] [DASK SCHEDULER OPTION ...]

Runs \`dask scheduler\` with the dmf Dask configuration (DASK_CONFIG, default
$script_dir, which holds dask.yaml). Options other than --tls-dir are passed to
\`dask scheduler\` unchanged (see \`dask scheduler --help\`), e.g.
  --host 10.0.0.5 --port 8786 --dashboard-address :8787 --scheduler-file FILE

  --tls-dir DIR   serve TLS only (tls:// address) with DIR/ca.pem, DIR/dask.pem and
                  DIR/dask-key.pem (the names make-test-certs.sh writes); the same as
                  --protocol tls --tls-ca-file DIR/ca.pem --tls-cert DIR/dask.pem
                  --tls-key DIR/dask-key.pem. Clients and workers then need a
                  certificate signed by the same CA (mutual TLS).

environment:
  DASK_CONFIG     directory of Dask YAML files (default: $script_dir)
  DMF_TLS_DIR     default for --tls-dir
  DMF_DASK_BIN    the dask command (default: dask on PATH)

example:
  $(basename "$0") --host 0.0.0.0 --port 8786 --scheduler-file /var/lib/dmf/scheduler.json
USAGE
}

tls_dir=${DMF_TLS_DIR:-}
dask_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --tls-dir)
            [[ $# -ge 2 ]] || { usage >&2; echo "error: --tls-dir needs a directory" >&2; exit 2; }
            tls_dir=$2; shift 2 ;;
        --tls-dir=*) tls_dir=${1#--tls-dir=}; shift ;;
        *) dask_args+=("$1"); shift ;;
    esac
done

tls_args=()
if [[ -n "$tls_dir" ]]; then
    for name in ca.pem dask.pem dask-key.pem; do
        [[ -r "$tls_dir/$name" ]] || { echo "error: $tls_dir/$name is missing or unreadable (make test certificates with $script_dir/make-test-certs.sh $tls_dir)" >&2; exit 2; }
    done
    tls_args=(--protocol tls --tls-ca-file "$tls_dir/ca.pem" --tls-cert "$tls_dir/dask.pem" --tls-key "$tls_dir/dask-key.pem")
fi

export DASK_CONFIG=${DASK_CONFIG:-$script_dir}
dask_bin=${DMF_DASK_BIN:-dask}
command -v "$dask_bin" >/dev/null || { echo "error: '$dask_bin' not found; install distributed or set DMF_DASK_BIN" >&2; exit 1; }

exec "$dask_bin" scheduler ${tls_args[@]+"${tls_args[@]}"} ${dask_args[@]+"${dask_args[@]}"}
