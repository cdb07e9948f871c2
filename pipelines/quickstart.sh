#!/usr/bin/env bash
# The main job on one machine: prepare MovieLens ml-100k from ../shared (generated ratings of
# the same shape when it is absent) as a Parquet snapshot, then run the nightly pipeline on a
# LocalCluster: split, fit, evaluate, quality gate, top-10 for every user, publish.
# Extra arguments go to nightly.py (e.g. --rank 32). Outputs: $DMF_QUICKSTART_DIR (default
# ./quickstart): data/ (prepared ratings) and home/models/current -> v1, v2, ...
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${DMF_QUICKSTART_DIR:-$PWD/quickstart}"
ml100k="$repo/../shared/data/movielens/ml-100k"
if [ -f "$ml100k/u.data" ]; then
    source_args=(--input "$ml100k")
else
    echo "quickstart: $ml100k not found; using generated ratings shaped like ml-100k" >&2
    source_args=(--synthetic ml-100k)
fi
python "$repo/pipelines/prepare.py" "${source_args[@]}" --overwrite "$work/data"
python "$repo/pipelines/nightly.py" --snapshot "$work/data/ratings" --home "$work/home" "$@"
