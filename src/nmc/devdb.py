"""Local database set-up for `just dev` and tests: create the database, or a private cluster.

With no `DATABASE_URL` and nothing listening on localhost:5432, a private cluster is initialised
under `.nmc/pgdata` from the machine's PostgreSQL binaries and started on that port.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PRIVATE_DIR = PROJECT_ROOT / ".nmc"
HOW_TO_GET_POSTGRES = (
    "PostgreSQL binaries were not found (initdb, pg_ctl). Install them with "
    "`sudo apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql@15` (macOS), "
    "or set DATABASE_URL to a running server."
)


class DevDatabaseError(RuntimeError):
    """The local database cannot be made ready; the message says what to do."""


@dataclass(frozen=True)
class PrivateCluster:
    data_dir: Path
    port: int
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/nmc"


def is_listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def find_postgres_bindir() -> Path:
    candidates = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += [os.path.dirname(p) for p in filter(None, [shutil.which("initdb")])]
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise DevDatabaseError(HOW_TO_GET_POSTGRES)


def _as_postgres_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` account there."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def start_private_cluster(data_dir: Path = PRIVATE_DIR / "pgdata", port: int = 5432) -> PrivateCluster:
    cluster = PrivateCluster(data_dir=data_dir, port=port, bindir=find_postgres_bindir())
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(data_dir.parent, account.pw_uid, account.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        _run([str(cluster.bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    if not is_listening("127.0.0.1", port):
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data_dir}"
        log_file = data_dir.parent / "postgres.log"
        _run([str(cluster.bindir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(log_file), "-w", "start"])
    return cluster


def stop_private_cluster(cluster: PrivateCluster) -> None:
    _run([str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-m", "fast", "-w", "stop"])


def _run(command: list[str]) -> None:
    result = subprocess.run(_as_postgres_user(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DevDatabaseError(f"{Path(command[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}")


def resolve_dev_database_url(environ: dict[str, str] | None = None, port: int = 5432) -> str:
    """DATABASE_URL if set; the server on localhost:`port` if one listens; else a private cluster."""
    env = dict(os.environ if environ is None else environ)
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    if is_listening("127.0.0.1", port):
        return f"postgresql://127.0.0.1:{port}/nmc"
    return start_private_cluster(port=port).url


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it is missing. Returns True when it was created."""
    parts = urlsplit(url.replace("postgres://", "postgresql://", 1))
    name = parts.path.lstrip("/") or "postgres"
    admin_url = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    try:
        admin = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DevDatabaseError(f"cannot reach PostgreSQL at {parts.hostname}:{parts.port or 5432}: {exc}") from exc
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await admin.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await admin.close()
