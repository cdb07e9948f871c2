"""The ingest boundary: column mapping, validation errors that name the problem, duplicates."""

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import dmf
from dmf.storage import atomic_directory


def _frame(**overrides):
    frame = pd.DataFrame({"user": [1, 1, 2, 3], "item": [10, 11, 10, 12], "rating": [4.0, 3.5, 5.0, 1.0],
                          "timestamp": [100, 200, 300, 400]})
    return frame.assign(**overrides)


def test_reads_parquet_directory_and_renames_columns(tmp_path):
    source = _frame().rename(columns={"user": "userId", "item": "movieId", "rating": "stars", "timestamp": "ts"})
    dd.from_pandas(source, npartitions=2).to_parquet(tmp_path / "ratings")
    frame = dmf.read_ratings(tmp_path / "ratings", user="userId", item="movieId", rating="stars", timestamp="ts")
    result = frame.compute().sort_values(["user", "item"]).reset_index(drop=True)
    assert list(result.columns) == ["user", "item", "rating", "timestamp"]
    assert result["rating"].dtype == np.float32
    assert result["rating"].tolist() == [4.0, 3.5, 5.0, 1.0]


def test_timestamp_is_optional():
    frame = dmf.read_ratings(_frame().drop(columns="timestamp"))
    assert list(frame.columns) == ["user", "item", "rating"]


@pytest.mark.parametrize(
    "frame, message",
    [
        (_frame().drop(columns="item"), "no column 'item'"),
        (_frame(rating=[4.0, np.nan, 5.0, 1.0]), "NaN or missing ratings: 1 of 4 rows"),
        (_frame(rating=["4", "good", "5", "1"]), "not numbers: 1 of 4 rows, e.g. .*'good'"),
        (_frame(rating=[4.0, np.inf, 5.0, 1e300]), "infinite ratings or ratings beyond float32 range: 2 of 4 rows"),
        (_frame(user=pd.array([1, None, 2, 3], dtype="Int64")), "column 'user' has missing ids: 1 of 4 rows"),
        (_frame().iloc[:0], "empty"),
    ],
)
def test_bad_input_raises_an_error_that_names_the_problem(frame, message, tmp_path):
    model = dmf.ALS(rank=2, max_iter=1)
    with pytest.raises(ValueError, match=message):
        model.fit(frame).save(tmp_path / "model")
    assert model.model_ is None  # no half-fitted state is left on the estimator
    assert list(tmp_path.iterdir()) == []  # and nothing was written


def test_wrong_source_and_id_types_raise_type_errors():
    with pytest.raises(TypeError, match="Parquet path, a pandas DataFrame or a Dask DataFrame"):
        dmf.read_ratings([1, 2, 3])
    with pytest.raises(TypeError, match="column 'user' must hold integer or string ids, got dtype float64"):
        dmf.read_ratings(_frame(user=[1.0, 2.0, 3.0, 4.0]))


def test_duplicates_raise_with_their_count_unless_a_policy_is_chosen():
    frame = pd.concat([_frame(), _frame().iloc[[0, 0, 2]].assign(rating=[2.0, 3.0, 1.0], timestamp=[50, 500, 600])])
    with pytest.raises(ValueError, match=r"2 \(user, item\) pairs that occur more than once \(3 extra rows\)"):
        dmf.read_ratings(frame, npartitions=3)
    latest = dmf.read_ratings(frame, duplicates="latest", npartitions=3).compute().set_index(["user", "item"])
    assert latest.loc[(1, 10), "rating"] == 3.0 and latest.loc[(2, 10), "rating"] == 1.0
    assert len(latest) == 4
    mean = dmf.read_ratings(frame, duplicates="mean", npartitions=3).compute().set_index(["user", "item"])
    assert mean.loc[(1, 10), "rating"] == pytest.approx(3.0) and mean.loc[(1, 10), "timestamp"] == 500
    assert mean.loc[(3, 12), "rating"] == 1.0


def test_fit_refuses_duplicates_that_bypassed_read_ratings(client):
    frame = pd.concat([_frame(), _frame().iloc[[1]]])
    with pytest.raises(ValueError, match="1 repeated"):
        dmf.ALS(rank=2, max_iter=1).fit(dd.from_pandas(frame, npartitions=2), validate=False)


def test_failed_write_leaves_nothing_and_keeps_the_old_directory(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as temporary:
        (temporary / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True) as temporary:
            (temporary / "a.txt").write_text("second")
            raise RuntimeError("killed half way")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_mixed_integer_and_string_ids_are_refused_not_merged():
    """1 and "1" would become one user (and every output id a string)."""
    frame = pd.DataFrame({"user": pd.Series([1, "1", "u2", 3], dtype=object), "item": [10, 11, 12, 13],
                          "rating": [4.0, 3.0, 5.0, 1.0]})
    with pytest.raises(ValueError, match=r"column 'user' mixes strings with other ids .* 2 of 4 rows"):
        dmf.read_ratings(frame)
    assert len(dmf.read_ratings(frame.assign(user=frame["user"].astype(str))).compute()) == 4


def test_one_large_parquet_file_is_read_in_partitions_of_row_groups(tmp_path, monkeypatch):
    """A single file of many row groups is split among the workers, not read as one partition."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import dmf.data.ratings as ratings_module

    frame = pd.DataFrame({"user": np.arange(40) % 7, "item": np.arange(40), "rating": np.ones(40)})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "one.parquet", row_group_size=5)
    monkeypatch.setattr(ratings_module, "ROWS_PER_PARTITION", 10)  # two row groups per partition
    read = dmf.read_ratings(tmp_path / "one.parquet")
    assert read.npartitions == 4
    pd.testing.assert_frame_equal(read.compute().reset_index(drop=True), frame.astype({"rating": "float32"}))
    # the same file in a snapshot directory beside a day's small file: still split
    (tmp_path / "snapshot").mkdir()
    (tmp_path / "one.parquet").rename(tmp_path / "snapshot" / "part.0.parquet")
    day = pd.DataFrame({"user": [100, 101], "item": [1, 2], "rating": [3.0, 4.0]})
    pq.write_table(pa.Table.from_pandas(day, preserve_index=False), tmp_path / "snapshot" / "part.1.parquet")
    read = dmf.read_ratings(tmp_path / "snapshot")
    assert read.npartitions == 5
    assert len(read.compute()) == 42


def test_many_small_files_are_coalesced_into_partitions_of_about_the_target_rows(tmp_path, monkeypatch):
    """A directory of many small files (a snapshot grown by daily files) is read in partitions
    of about ROWS_PER_PARTITION rows, adjacent files joined, nothing lost or repeated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import dmf.data.ratings as ratings_module

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"user": rng.integers(0, 50, 600), "item": np.arange(600), "rating": np.ones(600)})
    (tmp_path / "days").mkdir()
    for day in range(30):  # 30 files of 20 rows
        part = frame.iloc[day * 20 : (day + 1) * 20]
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), tmp_path / "days" / f"day-{day:03d}.parquet")
    monkeypatch.setattr(ratings_module, "ROWS_PER_PARTITION", 100)
    read = dmf.read_ratings(tmp_path / "days")
    assert read.npartitions == 6  # 600 rows / 100, not 30 files
    assert sorted(read.map_partitions(len).compute().tolist()) == [100] * 6
    pd.testing.assert_frame_equal(read.compute().sort_values("item").reset_index(drop=True),
                                  frame.astype({"rating": "float32"}))
    # a few files are read one partition each, as before
    monkeypatch.setattr(ratings_module, "ROWS_PER_PARTITION", 250)
    assert dmf.read_ratings(tmp_path / "days").npartitions == 3
    monkeypatch.setattr(ratings_module, "ROWS_PER_PARTITION", 20)
    assert dmf.read_ratings(tmp_path / "days").npartitions == 30
    # string ids keep the column types Dask's own reader gives
    monkeypatch.setattr(ratings_module, "ROWS_PER_PARTITION", 300)
    (tmp_path / "named").mkdir()
    for day in range(30):
        part = frame.iloc[day * 20 : (day + 1) * 20].assign(user=lambda f: "u" + f["user"].astype(str))
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), tmp_path / "named" / f"day-{day:03d}.parquet")
    named = dmf.read_ratings(tmp_path / "named")
    assert named.npartitions == 2 and named.compute().dtypes.equals(named._meta.dtypes)
    assert sorted(named.compute()["user"].unique()) == sorted("u" + frame["user"].astype(str).unique())


def test_re_ratings_across_partitions_are_counted_and_resolved_as_pandas_does(client):
    """Duplicates are found by pair hashes and only their rows are shuffled: counts and the
    resolved table equal a pandas groupby over the whole table."""
    rng = np.random.default_rng(7)
    base = pd.DataFrame({"user": rng.integers(0, 400, 6000), "item": rng.integers(0, 300, 6000)})
    base = base.drop_duplicates(["user", "item"]).reset_index(drop=True)
    base = base.assign(rating=rng.integers(1, 6, len(base)).astype("float32"),
                       timestamp=rng.integers(0, 10**6, len(base)))
    again = base.sample(700, random_state=1).assign(rating=5.0, timestamp=lambda f: f["timestamp"] + 1)
    thrice = again.head(100).assign(rating=1.0, timestamp=lambda f: f["timestamp"] + 1)
    frame = pd.concat([base, again, thrice]).sample(frac=1.0, random_state=2).reset_index(drop=True)
    with pytest.raises(ValueError, match=r"700 \(user, item\) pairs that occur more than once \(800 extra rows\)"):
        dmf.read_ratings(frame, npartitions=5)
    ordered = frame.sort_values(["user", "item", "timestamp"])
    expected = ordered.drop_duplicates(["user", "item"], keep="last").set_index(["user", "item"]).sort_index()
    latest = dmf.read_ratings(frame, duplicates="latest", npartitions=5).compute()
    latest = latest.set_index(["user", "item"]).sort_index()
    assert latest.index.equals(expected.index)
    np.testing.assert_array_equal(latest["rating"].to_numpy(), expected["rating"].to_numpy())
    assert (latest.loc[thrice.set_index(["user", "item"]).index, "rating"] == 1.0).all()
    mean = dmf.read_ratings(frame, duplicates="mean", npartitions=5).compute().set_index(["user", "item"]).sort_index()
    np.testing.assert_allclose(mean["rating"].to_numpy(), frame.groupby(["user", "item"])["rating"].mean().sort_index())
