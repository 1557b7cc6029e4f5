"""The services reach the embedded PostgreSQL over its Unix socket when the socket's path fits the
kernel's limit, else over 127.0.0.1 (the URL is built, no server is started here)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from procwatch.embedded import UNIX_PATH_MAX, EmbeddedPostgres


def test_a_short_data_directory_gives_the_socket_url(tmp_path):
    pg = EmbeddedPostgres(tmp_path / "pg dir", port=54321)
    parts = urlsplit(pg.url)
    assert (parts.hostname, parts.path) == (None, "/procwatch")
    assert parse_qs(parts.query) == {"host": [str((tmp_path / "pg dir").resolve())], "port": ["54321"]}


def test_a_data_directory_too_long_for_a_socket_gives_tcp(tmp_path):
    deep = tmp_path / ("d" * (UNIX_PATH_MAX - len(str(tmp_path))))
    pg = EmbeddedPostgres(deep, port=54321)
    assert len(str(pg.socket_path)) >= UNIX_PATH_MAX
    assert pg.url == f"postgresql://postgres:{pg.password}@127.0.0.1:54321/procwatch"


def test_the_socket_url_is_one_libpq_accepts(tmp_path):
    import psycopg.conninfo

    info = psycopg.conninfo.conninfo_to_dict(EmbeddedPostgres(Path(tmp_path) / "pg", port=5).url)
    assert (info["host"], info["port"], info["dbname"]) == (str((Path(tmp_path) / "pg").resolve()), "5", "procwatch")
