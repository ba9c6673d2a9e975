"""Deploy and release (issue #13, runbook §2, §4): render.yaml's two environments, `just release`'s
tags, `just migration-check`'s refusal of unmarked destructive migrations, and a worker that finds
the schema behind its code waiting (logged) until the migration has run."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from nmc.schema_gate import compare
from nmc.settings import SECRET_NAMES, Settings
from tests.conftest import SERVER_URL, drop_database, recreate_database, run_nmc
from tests.processes import Process

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------ render.yaml


def blueprint() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def test_render_declares_staging_and_production_and_production_deploys_tags_only() -> None:
    services = {service["name"]: service for service in blueprint()["services"]}
    assert set(services) == {f"nmc-{p}{e}" for p in ("web", "worker", "jobs") for e in ("", "-staging")}
    for name, service in services.items():
        staging = name.endswith("-staging")
        database = next(v for v in service["envVars"] if v.get("key") == "DATABASE_URL")["fromDatabase"]["name"]
        group = next(v["fromGroup"] for v in service["envVars"] if "fromGroup" in v)
        assert database == ("nmc-db-staging" if staging else "nmc-db"), name
        assert group == ("nmc-settings-staging" if staging else "nmc-settings"), name
        if staging:
            assert service["autoDeploy"] is True and service["branch"] == "main", name
        else:
            assert service["autoDeploy"] is False, f"{name}: production must not deploy on push"
    for web in ("nmc-web", "nmc-web-staging"):
        assert services[web]["preDeployCommand"].endswith("nmc db upgrade")
        assert services[web]["healthCheckPath"] == "/healthz"
    readme = (ROOT / "README.md").read_text()
    production = sorted(name for name in services if not name.endswith("-staging"))
    assert production == ["nmc-jobs", "nmc-web", "nmc-worker"]
    for name in [*production, "nmc-db"]:
        assert f"`{name}`" in readme, f"README does not name {name}"
    assert {database["name"] for database in blueprint()["databases"]} == {"nmc-db", "nmc-db-staging"}


def test_render_groups_name_only_real_settings_and_keep_secrets_out_of_git() -> None:
    known = set(Settings.__dataclass_fields__)
    for group in blueprint()["envVarGroups"]:
        entries = {entry["key"]: entry for entry in group["envVars"]}
        assert set(entries) <= known, set(entries) - known
        assert {"SECRET_KEY", "TWILIO_AUTH_TOKEN", "METRICS_TOKEN", "STRIPE_WEBHOOK_SECRET"} <= set(entries)
        for name in SECRET_NAMES & set(entries):
            entry = entries[name]
            assert entry.get("sync") is False or entry.get("generateValue") is True, (group["name"], name)
            assert "value" not in entry, (group["name"], name)
        assert entries["METRICS_TOKEN"]["sync"] is False
        assert entries["ENVIRONMENT"]["value"] == "production"


# ------------------------------------------------------------------------------ just release


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def _release(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo / "release.py"), "--no-push", *args], cwd=repo, capture_output=True, text=True
    )


def test_release_tags_vyyyy_mm_dd_n_after_the_checks_pass(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "ops@example.com")
    _git(repo, "config", "user.name", "ops")
    shutil.copy(ROOT / "ops" / "release.py", repo / "release.py")
    _git(repo, "add", "release.py")
    _git(repo, "commit", "-qm", "one")
    today = datetime.now(UTC).strftime("v%Y.%m.%d")

    failed = _release(repo, "--check", "true", "--check", "exit 3")
    assert failed.returncode == 1 and "nothing tagged" in failed.stderr
    assert _git(repo, "tag") == ""

    first = _release(repo, "--check", "true")
    assert first.returncode == 0, first.stderr
    assert _git(repo, "tag") == f"{today}-1"
    again = _release(repo, "--check", "true")
    assert again.returncode == 1 and "already released" in again.stderr

    (repo / "release.py").write_text((repo / "release.py").read_text() + "\n")
    dirty = _release(repo, "--check", "true")
    assert dirty.returncode == 1 and "uncommitted changes" in dirty.stderr
    _git(repo, "commit", "-qam", "two")
    assert _release(repo, "--check", "true", "--dry-run").stdout.strip().endswith(f"{today}-2")
    assert _release(repo, "--check", "true").returncode == 0
    assert _git(repo, "tag").split() == [f"{today}-1", f"{today}-2"]


# ------------------------------------------------------------------------------ just migration-check

PLANTED = '''"""planted

Revision ID: zz0000000001
Revises: {down}
"""

from alembic import op
import sqlalchemy as sa

revision = "zz0000000001"
down_revision = "{down}"


def upgrade() -> None:
{body}


def downgrade() -> None:
    op.drop_table("anything_upgrade_created")
'''


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('    op.drop_column("conv_messages", "body")', "op.drop_column"),
        ('    op.drop_table("conv_settings")', "op.drop_table"),
        ('    op.alter_column("conv_calls", "caller", type_=sa.String(10))', "rewrites a column"),
        ('    op.alter_column("conv_calls", "caller", new_column_name="from_")', "rewrites a column"),
        ('    op.execute("ALTER TABLE conv_calls DROP COLUMN caller")', "DROP COLUMN"),
        ('    op.execute("ALTER TABLE conv_calls ALTER COLUMN caller TYPE text")', "ALTER COLUMN"),
    ],
)
def test_migration_check_refuses_an_unmarked_destructive_migration(tmp_path: Path, body: str, named: str) -> None:
    """Each kind in-process (`check`, what the command runs); the command itself in the test below."""
    from nmc.migration_lint import check

    versions = _project_versions_plus(tmp_path, body)
    [finding] = check(versions)
    assert finding.path.name == "zz_planted.py" and named in str(finding)

    _project_versions_plus(tmp_path, body + DESTRUCTIVE_OK)
    assert check(versions) == []


DESTRUCTIVE_OK = "  # migration-check: destructive-ok the column has been unused since v2026.11.30-1"


def _project_versions_plus(tmp_path: Path, body: str) -> Path:
    """The project's migrations, and one more on top of head whose upgrade is `body`."""
    from nmc.schema_gate import code_heads

    versions = tmp_path / "versions"
    if not versions.exists():
        shutil.copytree(ROOT / "db" / "versions", versions, ignore=shutil.ignore_patterns("__pycache__"))
    [head] = code_heads()
    (versions / "zz_planted.py").write_text(PLANTED.format(down=head, body=body))
    return versions


def test_the_command_refuses_an_unmarked_destructive_migration_and_passes_a_marked_one(tmp_path: Path) -> None:
    body = '    op.drop_column("conv_messages", "body")'
    versions = _project_versions_plus(tmp_path, body)
    refused = run_nmc("db", "lint-migrations", "--versions", str(versions), check=False)
    assert refused.returncode != 0
    assert "zz_planted.py" in refused.stderr and "op.drop_column" in refused.stderr

    _project_versions_plus(tmp_path, body + DESTRUCTIVE_OK)
    assert run_nmc("db", "lint-migrations", "--versions", str(versions)).returncode == 0


def test_the_project_migrations_pass_the_check() -> None:
    assert "additive" in run_nmc("db", "lint-migrations").stdout


def test_additive_changes_and_downgrades_pass(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    body = '    op.add_column("conv_calls", sa.Column("x", sa.Integer(), nullable=True))'
    (versions / "zz_planted.py").write_text(PLANTED.format(down="none", body=body))
    assert run_nmc("db", "lint-migrations", "--versions", str(versions)).returncode == 0


CONCURRENT_INDEX = """    with op.get_context().autocommit_block():
        op.create_index(
            "ix_planted_concurrently", "conv_messages", ["to_number"], postgresql_concurrently=True
        )"""


def test_the_concurrent_index_pattern_the_check_asks_for_runs_on_a_real_database(tmp_path: Path) -> None:
    """What `just migration-check` tells an author to write is applied by Alembic as it runs a deploy
    (online: CREATE INDEX CONCURRENTLY outside the migration's transaction) and renders offline."""
    from nmc.schema_gate import code_heads

    shutil.copytree(ROOT / "db", tmp_path / "db", ignore=shutil.ignore_patterns("__pycache__"))
    [head] = code_heads()
    planted = PLANTED.format(down=head, body=CONCURRENT_INDEX).replace(
        'op.drop_table("anything_upgrade_created")', 'op.drop_index("ix_planted_concurrently", "conv_messages")'
    )
    (tmp_path / "db" / "versions" / "zz_planted.py").write_text(planted)
    assert run_nmc("db", "lint-migrations", "--versions", str(tmp_path / "db" / "versions")).returncode == 0

    name = f"nmc_test_concurrent_index_{os.getpid()}"
    url = f"{SERVER_URL}/{name}"
    asyncio.run(recreate_database(SERVER_URL, name))
    alembic = [sys.executable, "-m", "alembic", "-c", str(tmp_path / "db" / "alembic.ini")]
    env = {**os.environ, "DATABASE_URL": url}
    try:
        upgraded = subprocess.run([*alembic, "upgrade", "head"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert upgraded.returncode == 0, upgraded.stderr

        async def index_is_valid() -> bool:
            import asyncpg

            connection = await asyncpg.connect(url)
            try:
                return bool(
                    await connection.fetchval(
                        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_planted_concurrently'::regclass"
                    )
                )
            finally:
                await connection.close()

        assert asyncio.run(index_is_valid())
        offline = subprocess.run(
            [*alembic, "upgrade", f"{head}:zz0000000001", "--sql"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert offline.returncode == 0, offline.stderr
        sql = offline.stdout
        assert "CREATE INDEX CONCURRENTLY ix_planted_concurrently" in sql
        assert sql.index("COMMIT") < sql.index("CREATE INDEX CONCURRENTLY")  # outside the migration's transaction
    finally:
        asyncio.run(drop_database(SERVER_URL, name))


# ------------------------------------------------------------------------------ schema behind code


def test_the_schema_verdicts() -> None:
    known = {"a", "b", "c"}
    assert compare({"c"}, {"c"}, known) == "current"
    assert compare({"b"}, {"c"}, known) == "behind"
    assert compare(set(), {"c"}, known) == "behind"  # an empty database
    assert compare({"d"}, {"c"}, known) == "ahead"  # older code (a rollback) against a newer schema


def test_a_worker_on_a_schema_behind_its_code_waits_then_starts(tmp_path: Path) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config(str(ROOT / "db" / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "db"))
    script = ScriptDirectory.from_config(config)
    [head] = script.get_heads()
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)

    name = f"nmc_test_schema_gate_{os.getpid()}"
    url = f"{SERVER_URL}/{name}"
    asyncio.run(recreate_database(SERVER_URL, name))
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
    worker = None
    try:
        run_nmc("db", "upgrade", "--revision", previous, env={"DATABASE_URL": url})
        worker = Process("worker", env, tmp_path)
        worker.wait_for_output('"schema.behind_code"', timeout=60)
        assert "worker.started" not in worker.output()
        run_nmc("db", "upgrade", env={"DATABASE_URL": url})
        worker.wait_for_output("worker.started", timeout=60)
        assert worker.popen.poll() is None  # waited, never crashed
    finally:
        if worker is not None:
            worker.stop()
        asyncio.run(drop_database(SERVER_URL, name))
