"""MovieLens loaders, checksummed download, a MovieLens-like generator and the prepare stage.

- :func:`load_movielens` and friends read every GroupLens layout into canonical columns;
- :func:`fetch_movielens` downloads and verifies an official zip into a local cache;
- :func:`generate_ratings` makes MovieLens-shaped ratings at any scale, on the workers;
- :func:`validate_ratings` and :func:`prepare_dataset` turn raw ratings into Parquet with a split.
"""

from dmf._lazy import lazy_exports

__all__ = [
    "GENRES_100K", "GROUPLENS_SPLITS", "MOVIELENS_SCALE", "MovieLens", "PRESETS", "RELEASES", "Release", "SyntheticSpec",
    "ValidatedRatings", "default_data_home", "detect_layout", "fetch_movielens", "generate_ratings",
    "get_release", "grouplens_split", "load_items", "load_movielens", "load_ratings", "load_users", "prepare_dataset",
    "require_source",
    "synthetic_spec", "unpack_zip", "user_rating_counts", "validate_ratings", "write_partitioned",
]
# imported on first use: the pipelines read the release names without importing Dask
__getattr__, __dir__ = lazy_exports(globals(), {
    **dict.fromkeys(("default_data_home", "fetch_movielens", "unpack_zip"),
                    "dmf.datasets.download"),
    **dict.fromkeys(("GENRES_100K", "MovieLens", "detect_layout", "grouplens_split", "load_items", "load_movielens", "load_ratings", "load_users"),
                    "dmf.datasets.movielens"),
    **dict.fromkeys(("prepare_dataset", "write_partitioned"),
                    "dmf.datasets.prepare"),
    **dict.fromkeys(("GROUPLENS_SPLITS", "RELEASES", "Release", "get_release", "require_source"),
                    "dmf.datasets.releases"),
    **dict.fromkeys(("PRESETS", "SyntheticSpec", "generate_ratings", "synthetic_spec", "user_rating_counts"),
                    "dmf.datasets.synthetic"),
    **dict.fromkeys(("MOVIELENS_SCALE", "ValidatedRatings", "validate_ratings"),
                    "dmf.datasets.validation"),
})
