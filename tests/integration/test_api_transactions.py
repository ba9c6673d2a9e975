"""An `/api` write is answered 2xx only once it is committed (issue #10): a commit that fails becomes an
error answer and nothing is stored. The failure is real: a deferred constraint trigger that Postgres
checks at COMMIT, after every statement of the request succeeded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

REFUSED_AT_COMMIT = "refused at commit"


@pytest.fixture
async def commit_refuses_a_name(db: asyncpg.Connection) -> AsyncIterator[None]:
    await db.execute(
        f"""
        CREATE FUNCTION test_refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.name = '{REFUSED_AT_COMMIT}' THEN RAISE EXCEPTION 'refused at commit'; END IF;
            RETURN NEW;
        END $$;
        CREATE CONSTRAINT TRIGGER test_refuse_at_commit AFTER INSERT ON sched_resources
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse_at_commit();
        """
    )
    try:
        yield
    finally:
        await db.execute("DROP TRIGGER test_refuse_at_commit ON sched_resources; DROP FUNCTION test_refuse_at_commit()")


async def test_a_write_whose_commit_fails_is_not_answered_2xx(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, make_tenant: Any, commit_refuses_a_name: None
) -> None:
    tenant = await make_tenant()
    refused = await client.post("/api/resources", json={"name": REFUSED_AT_COMMIT}, headers=tenant.headers)
    assert refused.status_code == 500, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert await db.fetchval("SELECT count(*) FROM sched_resources") == 0

    stored = await client.post("/api/resources", json={"name": "Van 1"}, headers=tenant.headers)
    assert stored.status_code == 201, stored.text
    assert await db.fetchval("SELECT name FROM sched_resources") == "Van 1"


async def test_a_refused_write_rolls_back_what_the_handler_did(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    bad = await client.post(
        "/api/resources", json={"name": "Van 1", "weekly_hours": {"mon": [["09:00", "25:00"]]}}, headers=tenant.headers
    )
    assert 400 <= bad.status_code < 500
    assert await db.fetchval("SELECT count(*) FROM sched_resources") == 0
