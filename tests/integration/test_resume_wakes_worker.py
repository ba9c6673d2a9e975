"""A resume wakes a worker at once (issue #13: "within a second"): the released texts' dispatch jobs are
enqueued in the resume's transaction (PgQueuer's NOTIFY), not left for the worker's next sweep (2 s).
tests/e2e/test_kill_switch_e2e.py measures the same against the real worker."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from tests.conftest import run_cli
from tests.integration.test_first_sms import CALLER, dispatch_pending
from tests.integration.twilio_webhooks import missed_call

DUE_DISPATCH_JOBS = """
    SELECT count(*) FROM pgqueuer
    WHERE dedupe_key = 'outbox:' || $1::text AND status = 'queued' AND execute_after <= now()
"""


async def test_a_resume_enqueues_the_released_texts_dispatch(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await asyncio.to_thread(run_cli, "pause-sms", "--reason", "carrier filtering", "--by", "oncall")
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)  # the decision: wait as paused (a recheck job minutes away)
    event_id = await db.fetchval("SELECT id FROM outbox_events WHERE event_name = 'call.missed'")
    await db.execute("DELETE FROM pgqueuer WHERE dedupe_key = 'outbox:' || $1::text", str(event_id))  # consumed
    assert await db.fetchval(DUE_DISPATCH_JOBS, str(event_id)) == 0

    resumed = await asyncio.to_thread(run_cli, "resume-sms", "--yes")
    assert "1 waiting events released now" in resumed.stdout
    assert await db.fetchval(DUE_DISPATCH_JOBS, str(event_id)) == 1
    assert await dispatch_pending(db) >= 1
    assert len(fake_twilio.messages()) == 1
