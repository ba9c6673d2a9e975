"""`just migration-check`'s index rule (issue #13, runbook §4): an index built on an existing large or hot
table must be built CONCURRENTLY inside an autocommit block, unless the same migration created the
table or a marker says why a blocking build is safe. Planted migration files, pass and fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmc.migration_lint import LARGE_TABLES, REVIEWED_INDEXES, check, check_file

ROOT = Path(__file__).resolve().parents[2]

PLANTED = '''"""planted"""

from alembic import op
import sqlalchemy as sa

revision = "zz0000000002"
down_revision = "none"


def upgrade() -> None:
{body}


def downgrade() -> None:
    op.drop_index("ix_planted", table_name="conv_messages")
'''

CONCURRENT = """    with op.get_context().autocommit_block():
        op.create_index("ix_planted", "conv_messages", ["tenant_id"], postgresql_concurrently=True)"""


def plant(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "zz_planted.py"
    path.write_text(PLANTED.format(body=body))
    return path


def findings(tmp_path: Path, body: str) -> list[str]:
    return [f"{f.kind}: {f.what}" for f in check_file(plant(tmp_path, body))]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '    op.create_index("ix_planted", "conv_messages", ["tenant_id"])',
            "blocking-index: ix_planted on conv_messages without CONCURRENTLY",
        ),
        (
            '    op.create_index(index_name="ix_planted", table_name="outbox_events", columns=["created_at"])',
            "blocking-index: ix_planted on outbox_events without CONCURRENTLY",
        ),
        (  # concurrently, but inside the migration's transaction: Postgres refuses it at deploy time
            '    op.create_index("ix_planted", "webhook_events", ["provider"], postgresql_concurrently=True)',
            "blocking-index: ix_planted on webhook_events: CONCURRENTLY outside op.get_context().autocommit_block()",
        ),
        (
            '    op.execute("CREATE INDEX ix_planted ON conv_calls (tenant_id)")',
            "blocking-index: an index on conv_calls without CONCURRENTLY",
        ),
        (
            '    op.execute("create unique index if not exists ix_planted on public.sched_busy_blocks (tenant_id)")',
            "blocking-index: an index on sched_busy_blocks without CONCURRENTLY",
        ),
        (
            '    op.execute("CREATE INDEX CONCURRENTLY ix_planted ON conv_messages (tenant_id)")',
            "blocking-index: an index on conv_messages: CONCURRENTLY outside op.get_context().autocommit_block()",
        ),
        (
            '    op.create_unique_constraint("uq_planted", "conv_threads", ["tenant_id", "caller"])',
            "blocking-index: uq_planted on conv_threads without CONCURRENTLY",
        ),
        (  # a marker without a reason is no marker
            "    # migration-check: blocking-index-ok\n"
            '    op.create_index("ix_planted", "conv_messages", ["tenant_id"])',
            "blocking-index: ix_planted on conv_messages without CONCURRENTLY",
        ),
        (  # the marker covers the call it precedes, not every call of the migration
            "    # migration-check: blocking-index-ok tiny\n"
            '    op.create_index("ix_a", "conv_messages", ["tenant_id"])\n'
            '    op.create_index("ix_b", "conv_messages", ["thread_id"])',
            "blocking-index: ix_b on conv_messages without CONCURRENTLY",
        ),
    ],
)
def test_a_blocking_index_build_on_a_large_table_fails(tmp_path: Path, body: str, expected: str) -> None:
    assert findings(tmp_path, body) == [expected]


@pytest.mark.parametrize(
    "body",
    [
        CONCURRENT,
        """    with op.get_context().autocommit_block():
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_planted ON conv_messages (tenant_id)")""",
        # a small table: a blocking build takes milliseconds
        '    op.create_index("ix_planted", "conv_settings", ["tenant_id"])',
        # the table is new in this migration: empty, nothing to block
        """    op.create_table("conv_messages", sa.Column("id", sa.Integer(), primary_key=True))
    op.create_index("ix_planted", "conv_messages", ["id"])""",
        # marked, with a reason, on the line above the call or on its own lines
        """    # migration-check: blocking-index-ok conv_messages is empty on every deployment (feature not released)
    op.create_index("ix_planted", "conv_messages", ["tenant_id"])""",
        """    op.create_index(
        "ix_planted", "conv_messages", ["tenant_id"]  # migration-check: blocking-index-ok built in a maintenance window
    )""",
    ],
)
def test_a_concurrent_new_small_or_marked_index_passes(tmp_path: Path, body: str) -> None:
    assert findings(tmp_path, body) == []


def test_the_lists_name_real_tables_and_the_reviewed_builds_exist() -> None:
    from nmc.models import metadata

    assert LARGE_TABLES - {"pgqueuer"} <= set(metadata.tables), LARGE_TABLES - set(metadata.tables)
    sources = {p.name.split("_")[1]: p.read_text() for p in (ROOT / "db" / "versions").glob("*.py")}
    for (revision, index), why in REVIEWED_INDEXES.items():
        assert f'"{index}"' in sources[revision], (revision, index)
        assert why.strip()


def test_the_project_migrations_have_no_unreviewed_blocking_build() -> None:
    assert check(ROOT / "db" / "versions") == []
