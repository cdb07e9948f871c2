"""fetch_movielens end to end against a real HTTP server on 127.0.0.1 serving a zip built here."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from dmf.datasets import fetch_movielens, get_release, load_movielens
from dmf.datasets.download import MARKER

U_DATA = "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n"
U_ITEM = "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"


class _Server:
    """http.server in a thread, serving ``root`` and counting the requests it answers."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    http_server = _Server(root)
    http_server.thread.start()
    yield root, http_server
    http_server.httpd.shutdown()
    http_server.httpd.server_close()


def build_zip(path: Path) -> tuple[str, int]:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("ml-100k/u.data", U_DATA)
        bundle.writestr("ml-100k/u.item", U_ITEM.encode("latin-1"))
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size


def test_download_verifies_unpacks_and_caches(server, tmp_path):
    root, http_server = server
    sha, size = build_zip(root / "ml-100k.zip")
    home = tmp_path / "home"
    folder = fetch_movielens("ml-100k", home, url=http_server.url("ml-100k.zip"), sha256=sha, size=size)
    assert folder == home / "ml-100k" / "ml-100k"
    assert (folder / "u.data").read_text() == U_DATA
    marker = json.loads((home / "ml-100k" / MARKER).read_text())
    assert marker["sha256"] == sha and marker["bytes"] == size
    assert sorted(p.name for p in home.iterdir()) == ["ml-100k"]  # no partial files, no zip left
    assert fetch_movielens("ml-100k", home, url=http_server.url("ml-100k.zip"), sha256=sha) == folder
    assert http_server.requests == ["/ml-100k.zip"]  # the second call used the cache
    ratings = load_movielens(folder).ratings.compute()
    assert ratings["rating"].tolist() == [5.0, 3.0, 4.0]


def test_checksum_mismatch_leaves_nothing_in_cache(server, tmp_path):
    root, http_server = server
    _, size = build_zip(root / "ml-100k.zip")
    home = tmp_path / "home"
    official = get_release("ml-100k").sha256
    with pytest.raises(ValueError, match=f"expected {official}"):
        fetch_movielens("ml-100k", home, url=http_server.url("ml-100k.zip"), size=size)
    with pytest.raises(ValueError, match=r"gave \d+ bytes, expected 4924029"):
        fetch_movielens("ml-100k", home, url=http_server.url("ml-100k.zip"))
    assert list(home.iterdir()) == []
    assert len(http_server.requests) == 2


def test_unreachable_server_names_url_and_cache_path(tmp_path):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ml-20m.zip"
    home = tmp_path / "home"
    with pytest.raises(ConnectionError) as caught:
        fetch_movielens("ml-20m", home, url=url, timeout=5)
    message = str(caught.value)
    assert url in message and str(home / "ml-20m.zip") in message
    assert list(home.iterdir()) == []


def test_missing_file_on_server_is_a_connection_error(server, tmp_path):
    _, http_server = server
    with pytest.raises(ConnectionError, match="404|Not Found"):
        fetch_movielens("ml-1m", tmp_path / "home", url=http_server.url("absent.zip"))


def test_zip_placed_by_hand_is_verified_without_download(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    sha, size = build_zip(home / "ml-100k.zip")
    folder = fetch_movielens("ml-100k", home, url="http://127.0.0.1:9/never-contacted.zip", sha256=sha, size=size)
    assert (folder / "u.item").exists()


def test_unsafe_member_paths_are_refused(server, tmp_path):
    root, http_server = server
    archive = root / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ml-100k/../../escaped.txt", "x")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    home = tmp_path / "home"
    with pytest.raises(ValueError, match="unsafe member path"):
        fetch_movielens("ml-100k", home, url=http_server.url("evil.zip"), sha256=sha, size=archive.stat().st_size)
    assert list(home.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


def test_unknown_release_lists_known_names():
    with pytest.raises(ValueError, match="ml-25m"):
        fetch_movielens("ml-3m")
