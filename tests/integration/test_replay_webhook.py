"""`just replay-webhook ID` (runbook §7.2) as the operator runs it: the real `nmc replay-webhook` process
against the test database. A stored delivery replayed has its effect once; an unknown id is refused."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import asyncpg
from litestar.testing import AsyncTestClient

from tests.conftest import run_cli
from tests.integration.test_first_sms import CALLER, dispatch_pending, first_sms_rows
from tests.integration.twilio_webhooks import missed_call


async def effect_counts(db: asyncpg.Connection) -> dict[str, int]:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM conv_calls) AS calls,"
        " (SELECT count(*) FROM conv_messages) AS messages,"
        " (SELECT count(*) FROM outbox_events) AS outbox,"
        " (SELECT count(*) FROM webhook_events) AS deliveries"
    )
    return dict(row)


async def test_a_replayed_twilio_delivery_has_its_effect_once_and_says_what_it_replayed(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    call_sid, response = await missed_call(client, tenant.number, CALLER)
    assert response.status_code == 200
    while await dispatch_pending(db):  # the call, then what its text published
        pass
    assert len(fake_twilio.messages()) == 1
    delivery = await db.fetchrow("SELECT id, kind, external_id FROM webhook_events WHERE provider = 'twilio'")
    assert call_sid in delivery["external_id"]
    before = await effect_counts(db)
    assert (before["calls"], before["messages"], before["deliveries"]) == (1, 1, 1)

    result = run_cli("replay-webhook", str(delivery["id"]))
    assert result.stdout.strip() == f"replayed twilio {delivery['kind']} {delivery['external_id']}"

    assert await dispatch_pending(db) == 0  # the replay published nothing new for the worker
    assert await effect_counts(db) == before  # no second call, text, outbox row or delivery
    [message] = await first_sms_rows(db)
    assert message["status"] == "accepted"
    assert len(fake_twilio.messages()) == 1

    again = run_cli("replay-webhook", str(delivery["id"]))  # replayed twice: still once
    assert again.stdout == result.stdout
    assert await effect_counts(db) == before


async def test_an_unknown_id_is_refused_naming_it(db: asyncpg.Connection) -> None:
    unknown = uuid4()
    result = run_cli("replay-webhook", str(unknown), check=False)
    assert result.returncode != 0
    assert f"no webhook_events row {unknown}" in result.stderr
    assert result.stdout == ""
    assert await db.fetchval("SELECT count(*) FROM outbox_events") == 0


async def test_a_malformed_id_is_refused_naming_it(db: asyncpg.Connection) -> None:
    result = run_cli("replay-webhook", "dial-status:CA123", check=False)
    assert result.returncode != 0
    assert "'dial-status:CA123'" in result.stderr and "webhook_events id" in result.stderr
