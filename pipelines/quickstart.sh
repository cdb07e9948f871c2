#!/usr/bin/env bash
# The main job on one machine: prepare MovieLens ml-100k as a Parquet snapshot, then run the
# nightly pipeline on a LocalCluster: fit on the prepared train pairs, evaluate on the prepared
# test set (ml-100k: GroupLens' u1 split, as the README's u1 numbers), quality gate, top-10
# for every user, publish. The data, in this order: ../shared/data/movielens/ml-100k beside the
# checkout; else GroupLens' official ml-100k zip, downloaded once (checksummed) into
# $DMF_DATA_HOME or ~/dmf_data; else, with no network, generated ratings shaped like ml-100k.
# The last line names the data used. Extra arguments go to nightly.py (e.g. --rank 32).
# Outputs: $DMF_QUICKSTART_DIR (default ./quickstart): data/ (prepared ratings) and
# home/models/current -> v1, v2, ...
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${DMF_QUICKSTART_DIR:-$PWD/quickstart}"
ml100k="$repo/../shared/data/movielens/ml-100k"
if [ -f "$ml100k/u.data" ]; then
    source_args=(--input "$ml100k" --split grouplens --grouplens-split u1)
    data="MovieLens ml-100k from $ml100k"
    split="GroupLens' u1.test (the README's u1 numbers)"
elif python -c "from dmf.datasets import fetch_movielens; print(fetch_movielens('ml-100k', timeout=20))" >/dev/null 2>&1; then
    echo "quickstart: using GroupLens MovieLens ml-100k (downloaded and checksummed; for research use under" \
         "GroupLens' license, see https://grouplens.org/datasets/movielens/)" >&2
    source_args=(--input ml-100k --split grouplens --grouplens-split u1)
    data="MovieLens ml-100k, downloaded from GroupLens"
    split="GroupLens' u1.test (the README's u1 numbers)"
else
    echo "quickstart: MovieLens ml-100k is neither beside the checkout nor downloadable here; using GENERATED" \
         "ratings shaped like ml-100k (numbers will not match the README's MovieLens numbers)" >&2
    source_args=(--synthetic ml-100k)
    data="generated ratings shaped like ml-100k (not MovieLens)"
    split="a random 20 % of the generated ratings"
fi
python "$repo/pipelines/prepare.py" "${source_args[@]}" --overwrite "$work/data"
python "$repo/pipelines/nightly.py" --snapshot "$work/data/ratings" --test "$work/data/test" --home "$work/home" "$@"
echo "quickstart: data: $data; test set: $split"
