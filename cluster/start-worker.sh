#!/usr/bin/env bash
# Start one dmf Dask worker in the foreground (exec: the dask process keeps this PID, so
# systemd, supervisors and tests can signal it directly).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<USAGE
usage: $(basename "$0") [--tls-dir DIR] [SCHEDULER_ADDRESS] [DASK WORKER OPTION ...]

Runs one \`dask worker\` process with the dmf Dask configuration (DASK_CONFIG, default
$script_dir) and one BLAS/OpenMP thread per worker thread. The scheduler is
SCHEDULER_ADDRESS (tcp://HOST:8786 or tls://HOST:8786) when given as the first argument,
else \`--scheduler-file FILE\` among the options, else \$DMF_SCHEDULER.

Defaults, each overridden by the same option given on the command line:
  --nthreads       \$DMF_WORKER_NTHREADS       or the number of CPUs ($(nproc 2>/dev/null || echo '?') here)
  --memory-limit   \$DMF_WORKER_MEMORY_LIMIT   or auto (all of the machine's memory)
  --death-timeout  \$DMF_WORKER_DEATH_TIMEOUT  or 60s (exit if the scheduler is unreachable)
Other options go to \`dask worker\` unchanged (see \`dask worker --help\`), e.g.
  --no-nanny --name worker-1 --local-directory /var/tmp/dask --host 10.0.0.6

  --tls-dir DIR   connect and serve over TLS with DIR/ca.pem, DIR/dask.pem and
                  DIR/dask-key.pem (the same as --tls-ca-file/--tls-cert/--tls-key);
                  the scheduler address must then start with tls://.

environment:
  DASK_CONFIG       directory of Dask YAML files (default: $script_dir)
  DMF_TLS_DIR       default for --tls-dir
  DMF_BLAS_THREADS  BLAS/OpenMP threads per worker thread (default 1)
  DMF_DASK_BIN      the dask command (default: dask on PATH)

example:
  $(basename "$0") tcp://10.0.0.5:8786 --nthreads 8 --memory-limit 28GiB
USAGE
}

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    usage
    exit 0
fi

scheduler=()
if [[ $# -ge 1 && "$1" != -* ]]; then
    scheduler=("$1")
    shift
fi

tls_dir=${DMF_TLS_DIR:-}
has_scheduler_file=false
dask_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --tls-dir)
            [[ $# -ge 2 ]] || { usage >&2; echo "error: --tls-dir needs a directory" >&2; exit 2; }
            tls_dir=$2; shift 2 ;;
        --tls-dir=*) tls_dir=${1#--tls-dir=}; shift ;;
        --scheduler-file|--scheduler-file=*) has_scheduler_file=true; dask_args+=("$1"); shift ;;
        *) dask_args+=("$1"); shift ;;
    esac
done

if [[ ${#scheduler[@]} -eq 0 && $has_scheduler_file == false ]]; then
    if [[ -n "${DMF_SCHEDULER:-}" ]]; then
        scheduler=("$DMF_SCHEDULER")
    else
        usage >&2
        echo "error: no scheduler: give its address first, --scheduler-file FILE, or set DMF_SCHEDULER" >&2
        exit 2
    fi
fi

tls_args=()
if [[ -n "$tls_dir" ]]; then
    for name in ca.pem dask.pem dask-key.pem; do
        [[ -r "$tls_dir/$name" ]] || { echo "error: $tls_dir/$name is missing or unreadable" >&2; exit 2; }
    done
    tls_args=(--tls-ca-file "$tls_dir/ca.pem" --tls-cert "$tls_dir/dask.pem" --tls-key "$tls_dir/dask-key.pem")
fi

blas_threads=${DMF_BLAS_THREADS:-1}
export OMP_NUM_THREADS=$blas_threads OPENBLAS_NUM_THREADS=$blas_threads MKL_NUM_THREADS=$blas_threads
export VECLIB_MAXIMUM_THREADS=$blas_threads NUMEXPR_NUM_THREADS=$blas_threads
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-65536}
export DASK_CONFIG=${DASK_CONFIG:-$script_dir}
dask_bin=${DMF_DASK_BIN:-dask}
command -v "$dask_bin" >/dev/null || { echo "error: '$dask_bin' not found; install distributed or set DMF_DASK_BIN" >&2; exit 1; }

default_args=(
    --nthreads "${DMF_WORKER_NTHREADS:-$(nproc)}"
    --memory-limit "${DMF_WORKER_MEMORY_LIMIT:-auto}"
    --death-timeout "${DMF_WORKER_DEATH_TIMEOUT:-60s}"
)
# Options given later win (click keeps the last value), so the caller's options override
# the defaults.
exec "$dask_bin" worker ${scheduler[@]+"${scheduler[@]}"} "${default_args[@]}" \
    ${tls_args[@]+"${tls_args[@]}"} ${dask_args[@]+"${dask_args[@]}"}
