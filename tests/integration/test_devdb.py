"""Local database set-up (`nmc dev`): a private cluster from the machine's binaries, database creation."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from nmc import devdb
from nmc.devdb import (
    HOW_TO_GET_POSTGRES,
    DevDatabaseError,
    PrivateCluster,
    ensure_database,
    find_postgres_bindir,
    resolve_dev_database_url,
    start_private_cluster,
    stop_private_cluster,
)
from tests.conftest import SERVER_URL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """A directory the `postgres` account can reach (pytest's tmp_path sits under a 0700 directory)."""
    base = Path(tempfile.mkdtemp(prefix="nmc-devdb-", dir="/tmp"))
    base.chmod(0o755)
    yield base / "cluster"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def private_cluster(cluster_dir: Path) -> Iterator[PrivateCluster]:
    try:
        find_postgres_bindir()
    except DevDatabaseError:
        pytest.fail("PostgreSQL binaries (initdb, pg_ctl) are required on the test machine")
    cluster = start_private_cluster(data_dir=cluster_dir / "pgdata", port=free_port())
    try:
        yield cluster
    finally:
        if devdb.is_listening("127.0.0.1", cluster.port):
            stop_private_cluster(cluster)


async def test_private_cluster_starts_creates_the_database_and_stops(private_cluster: PrivateCluster) -> None:
    cluster = private_cluster
    assert (cluster.data_dir / "PG_VERSION").exists()
    assert devdb.is_listening("127.0.0.1", cluster.port)
    assert cluster.url == f"postgresql://postgres@127.0.0.1:{cluster.port}/nmc"

    assert await ensure_database(cluster.url) is True
    assert await ensure_database(cluster.url) is False

    connection = await asyncpg.connect(cluster.url)
    try:
        assert await connection.fetchval("SELECT current_database()") == "nmc"
        # It is our cluster, not the machine's server.
        assert Path(await connection.fetchval("SHOW data_directory")).resolve() == cluster.data_dir.resolve()
    finally:
        await connection.close()

    # Starting again is a no-op on a running, initialised cluster.
    assert start_private_cluster(data_dir=cluster.data_dir, port=cluster.port) == cluster

    stop_private_cluster(cluster)
    assert not devdb.is_listening("127.0.0.1", cluster.port)
    with pytest.raises(DevDatabaseError, match=f"cannot reach PostgreSQL at 127.0.0.1:{cluster.port}"):
        await ensure_database(cluster.url)


async def test_ensure_database_accepts_render_style_urls(db: asyncpg.Connection) -> None:
    name = "nmc_devdb_probe"
    await db.execute(f'DROP DATABASE IF EXISTS "{name}"')
    url = f"{SERVER_URL}/{name}".replace("postgresql://", "postgres://", 1)
    try:
        assert await ensure_database(url) is True
        assert await db.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name) == 1
        assert await ensure_database(url) is False
    finally:
        await db.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_missing_binaries_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_config, no initdb on PATH
    monkeypatch.setattr(devdb.glob, "glob", lambda pattern: [])  # no /usr/lib/postgresql/*/bin
    with pytest.raises(DevDatabaseError) as raised:
        find_postgres_bindir()
    assert str(raised.value) == HOW_TO_GET_POSTGRES
    assert "apt-get install postgresql" in str(raised.value)
    assert "DATABASE_URL" in str(raised.value)


def test_the_machine_binaries_are_found() -> None:
    bindir = find_postgres_bindir()
    assert os.access(bindir / "initdb", os.X_OK)
    assert os.access(bindir / "pg_ctl", os.X_OK)


def test_database_url_wins_unchanged() -> None:
    assert resolve_dev_database_url({"DATABASE_URL": "postgresql://x/y"}) == "postgresql://x/y"


def test_a_server_listening_on_the_port_is_used() -> None:
    port = int(SERVER_URL.rsplit(":", 1)[1])
    assert resolve_dev_database_url({}, port=port) == f"postgresql://127.0.0.1:{port}/nmc"
