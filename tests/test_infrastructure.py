"""The test back ends in conftest.py are real and isolated."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import s3fs
import sqlalchemy as sa

if TYPE_CHECKING:
    from conftest import PostgresServer


def test_postgres_url_accepts_queries(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == (
                sa.make_url(postgres_url).database
            )
    finally:
        engine.dispose()


@pytest.fixture
def other_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A second fresh database, made the same way as ``postgres_url``."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(sa.make_url(url).database or "")


def test_each_postgres_url_is_a_separate_database(postgres_url: str, other_postgres_url: str) -> None:
    assert postgres_url != other_postgres_url
    first, second = sa.create_engine(postgres_url), sa.create_engine(other_postgres_url)
    try:
        with first.begin() as conn:
            conn.execute(sa.text("CREATE TABLE marker (x int)"))
        assert sa.inspect(first).has_table("marker")
        assert not sa.inspect(second).has_table("marker")
    finally:
        first.dispose()
        second.dispose()


def test_s3_bucket_roundtrip(s3_endpoint: str, s3_bucket: str) -> None:
    assert s3_endpoint.startswith("http://127.0.0.1:")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    path = f"{s3_bucket}/dir/hello.txt"
    fs.pipe(path, b"hello molen")
    assert fs.cat(path) == b"hello molen"
    assert fs.ls(f"{s3_bucket}/dir") == [path]


def test_s3_buckets_are_fresh(s3_endpoint: str, s3_bucket: str) -> None:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    assert fs.ls(s3_bucket) == []


def test_postgres_server_stop_and_start(postgres_server: PostgresServer, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE TABLE kept (x int)"))
            conn.execute(sa.text("INSERT INTO kept VALUES (42)"))
            conn.commit()
        postgres_server.stop()
        assert not postgres_server.running
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        postgres_server.start()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT x FROM kept")).scalar_one() == 42
    finally:
        engine.dispose()
        postgres_server.start()  # no-op if running; keeps the session server usable
    assert postgres_server.admin_url().endswith(f":{postgres_server.port}/postgres")


def test_environment_is_isolated(tmp_path: Path) -> None:
    assert not [var for var in os.environ if var.startswith("MOLEN_")]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.txt").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-q", "-m", "init"], check=True)
    author = subprocess.run(
        ["git", "-C", str(tmp_path), "log", "-1", "--format=%an <%ae>"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert author == "molen tests <tests@molen.invalid>"
