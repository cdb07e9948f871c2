"""MovieLens loaders, checksummed download, a MovieLens-like generator and the prepare stage.

- :func:`load_movielens` and friends read every GroupLens layout into canonical columns;
- :func:`fetch_movielens` downloads and verifies an official zip into a local cache;
- :func:`generate_ratings` makes MovieLens-shaped ratings at any scale, on the workers;
- :func:`validate_ratings` and :func:`prepare_dataset` turn raw ratings into Parquet with a split.
"""

from dmf.datasets.download import default_data_home, fetch_movielens, unpack_zip
from dmf.datasets.movielens import (
    GENRES_100K,
    GROUPLENS_SPLITS,
    MovieLens,
    detect_layout,
    grouplens_split,
    load_items,
    load_movielens,
    load_ratings,
    load_users,
)
from dmf.datasets.prepare import prepare_dataset, write_partitioned
from dmf.datasets.releases import RELEASES, Release, get_release
from dmf.datasets.synthetic import PRESETS, SyntheticSpec, generate_ratings, synthetic_spec, user_rating_counts
from dmf.datasets.validation import MOVIELENS_SCALE, ValidatedRatings, validate_ratings

__all__ = [
    "GENRES_100K", "GROUPLENS_SPLITS", "MOVIELENS_SCALE", "MovieLens", "PRESETS", "RELEASES", "Release", "SyntheticSpec",
    "ValidatedRatings", "default_data_home", "detect_layout", "fetch_movielens", "generate_ratings",
    "get_release", "grouplens_split", "load_items", "load_movielens", "load_ratings", "load_users", "prepare_dataset",
    "synthetic_spec", "unpack_zip", "user_rating_counts", "validate_ratings", "write_partitioned",
]
