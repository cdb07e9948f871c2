"""MovieLens loaders: ml-100k from ../shared, and every other layout from files written here in GroupLens' format."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA

from dmf.columns import ITEM, RATING, TIMESTAMP, USER
from dmf.datasets import GENRES_100K, detect_layout, load_items, load_movielens, load_ratings, load_users

# ml-1m style rows; rating 5 of user 2 is on item 3, whose title is latin-1 encoded.
RATINGS_DAT = [(1, 1193, 5, 978300760), (1, 661, 3, 978302109), (2, 3, 4, 978298413),
               (2, 1193, 1, 978299000), (10, 661, 2, 978226474)]
MOVIES_DAT = [(1193, "One Flew Over the Cuckoo's Nest (1975)", "Drama"),
              (661, "James and the Giant Peach (1996)", "Animation|Children's|Musical"),
              (3, "Misérables, Les (1995)", "Drama|Musical")]


def write_lines(path: Path, lines: list[str], encoding: str, newline: str = "\n") -> Path:
    path.write_bytes("".join(line + newline for line in lines).encode(encoding))
    return path


def dat_release(folder: Path, encoding: str, newline: str = "\n", users: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_lines(folder / "ratings.dat", ["::".join(map(str, row)) for row in RATINGS_DAT], encoding, newline)
    write_lines(folder / "movies.dat", ["::".join(map(str, row)) for row in MOVIES_DAT], encoding, newline)
    if users:
        write_lines(folder / "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072", "10::F::35::1::95370"],
                    encoding, newline)
    return folder


def csv_release(folder: Path, newline: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_lines(folder / "ratings.csv", ["userId,movieId,rating,timestamp", "1,2,3.5,1112486027",
                                         "1,29,3.5,1112484676", "7,2,0.5,1094785740", "7,32,5.0,1094785698"],
                "utf-8", newline)
    write_lines(folder / "movies.csv", ["movieId,title,genres", "2,Jumanji (1995),Adventure|Children|Fantasy",
                                        '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",'
                                        "Adventure|Drama|Fantasy|Mystery|Sci-Fi",
                                        "32,Twelve Monkeys (a.k.a. 12 Monkeys) (1995),Mystery|Sci-Fi|Thriller",
                                        "131262,Innocence (2014),(no genres listed)"],
                "utf-8", newline)
    return folder


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values([USER, ITEM], ignore_index=True)


def test_ml100k_counts_titles_and_users(ml100k):
    movielens = load_movielens(ml100k)
    ratings = movielens.ratings.compute()
    assert movielens.layout == "100k"
    assert list(ratings.columns) == [USER, ITEM, RATING, TIMESTAMP]
    assert (len(ratings), ratings[USER].nunique(), ratings[ITEM].nunique()) == (100_000, 943, 1_682)
    assert ratings[RATING].value_counts().sort_index().tolist() == [6_110, 11_370, 27_145, 34_174, 21_201]
    assert ratings.iloc[-1].tolist() == [12, 203, 3.0, 879959583]
    items = movielens.items.set_index(ITEM)
    assert len(items) == 1_682
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert items.loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    assert items.loc[543, "title"] == "Misérables, Les (1995)"  # latin-1 byte 0xE9
    assert movielens.users.shape == (943, 5)
    assert movielens.users.set_index(USER).loc[1].tolist() == [24, "M", "technician", "85711"]
    assert len(GENRES_100K) == 19


def test_ml100k_byte_ranges_read_every_line_once(ml100k):
    whole = load_ratings(ml100k)
    split = load_ratings(ml100k, blocksize=100_003)
    assert whole.npartitions == 1 and split.npartitions == 20
    pd.testing.assert_frame_equal(sorted_rows(split.compute()), sorted_rows(whole.compute()))


@pytest.mark.parametrize("blocksize", [1, 7, 23, 1000])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_dat_layout_latin1_any_blocksize(tmp_path, blocksize, newline):
    folder = dat_release(tmp_path / "ml-1m", "latin-1", newline)
    movielens = load_movielens(folder, blocksize=blocksize)
    ratings = sorted_rows(movielens.ratings.compute())
    expected = sorted_rows(pd.DataFrame(RATINGS_DAT, columns=[USER, ITEM, RATING, TIMESTAMP]).astype({RATING: float}))
    pd.testing.assert_frame_equal(ratings, expected)
    titles = movielens.items.set_index(ITEM)["title"]
    assert titles[3] == "Misérables, Les (1995)"
    assert movielens.items.set_index(ITEM).loc[661, "genres"] == ["Animation", "Children's", "Musical"]
    users = movielens.users.set_index(USER)
    assert users.loc[2].tolist() == ["M", 56, "self-employed", "70072"]
    assert users.loc[10, "occupation"] == "academic/educator"


def test_dat_layout_utf8_without_users(tmp_path):
    folder = dat_release(tmp_path / "ml-10M100K", "utf-8", users=False)
    with open(folder / "movies.dat", "ab") as stream:
        stream.write("7::Hachiko: A Dog's Story (ハチ公物語) (2009)::Drama\n".encode())
    items = load_items(folder).set_index(ITEM)
    assert items.loc[3, "title"] == "Misérables, Les (1995)"
    assert items.loc[7, "title"] == "Hachiko: A Dog's Story (ハチ公物語) (2009)"
    assert load_users(folder) is None
    assert len(load_ratings(folder).compute()) == len(RATINGS_DAT)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_layout_with_header_and_crlf(tmp_path, newline):
    folder = csv_release(tmp_path / "ml-latest-small", newline)
    assert detect_layout(folder) == "csv"
    for blocksize in (5, 64 * 2**20):
        ratings = sorted_rows(load_ratings(folder, blocksize=blocksize).compute())
        assert ratings[USER].tolist() == [1, 1, 7, 7]
        assert ratings[RATING].tolist() == [3.5, 3.5, 0.5, 5.0]
        assert ratings[TIMESTAMP].tolist()[0] == 1112486027
        assert ratings.dtypes.tolist() == [np.int64, np.int64, np.float64, np.int64]
    items = load_items(folder).set_index(ITEM)
    assert items.loc[29, "title"] == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    assert items.loc[32, "genres"] == ["Mystery", "Sci-Fi", "Thriller"]
    assert items.loc[131262, "genres"] == []
    assert not items["title"].str.endswith("\r").any()
    assert load_users(folder) is None


def test_official_zip_is_unpacked_once_into_data_home(tmp_path):
    folder = dat_release(tmp_path / "src" / "ml-1m", "latin-1")
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.iterdir()):
            bundle.write(path, f"ml-1m/{path.name}")
    movielens = load_movielens(archive, data_home=tmp_path / "home")
    assert movielens.path == tmp_path / "home" / "ml-1m-unzipped" / "ml-1m"
    assert len(movielens.ratings.compute()) == len(RATINGS_DAT)
    again = load_movielens(archive, data_home=tmp_path / "home")  # cached: no second unpack
    assert again.path == movielens.path
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["ml-1m-unzipped"]


def test_metadata_of_shared_ml1m_and_ml10m():
    ml1m, ml10m = SHARED_DATA / "ml-1m", SHARED_DATA / "ml-10M100K"
    if not (ml1m / "movies.dat").exists() or not (ml10m / "movies.dat").exists():
        pytest.skip("ml-1m / ml-10M100K metadata not in ../shared")
    items_1m = load_items(ml1m).set_index(ITEM)
    assert len(items_1m) == 3_883 and items_1m.loc[73, "title"] == "Misérables, Les (1995)"
    assert len(load_users(ml1m)) == 6_040
    items_10m = load_items(ml10m)
    assert len(items_10m) == 10_681 and items_10m[ITEM].is_unique


def test_malformed_line_names_the_file(tmp_path):
    folder = dat_release(tmp_path / "bad", "utf-8")
    with open(folder / "ratings.dat", "ab") as stream:
        stream.write(b"3::4::5::6::7::8\n")
    with pytest.raises(ValueError, match=r"ratings\.dat bytes"):
        load_ratings(folder).compute()


def test_bad_values_are_kept_for_validation_to_report(tmp_path):
    folder = dat_release(tmp_path / "bad", "utf-8")
    with open(folder / "ratings.dat", "ab") as stream:
        stream.write(b"::5::4::978300760\n11::5::five::978300760\n")
    ratings = load_ratings(folder).compute()
    assert ratings[USER].isna().sum() == 1
    assert "five" in ratings[RATING].astype(str).tolist()


def test_missing_folder_and_unknown_source_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder, a zip nor a release name"):
        load_movielens(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no MovieLens files"):
        load_movielens(tmp_path)
