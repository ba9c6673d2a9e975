"""Every text after the first: owner replies, follow-ups, owner alerts and help replies, queued
through the outbox and sent by the real dispatcher against the fake Twilio API with the first SMS's
guards (opt-out at send time, quiet hours, pause, unknown outcomes, 21610, landlines)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from nmc.conversations.follow_up import queue_due_follow_ups
from tests.conftest import MESSAGING_SERVICE_SID
from tests.integration.conftest import zone_at_local_hour
from tests.integration.test_inbox_support import (
    CALLER,
    dispatch_all,
    messages,
    opted_out,
    sent_to,
    text_in,
    texted_back,
)
from tests.integration.twilio_webhooks import missed_call, post_twilio

OTHER_CALLER = "+15557650000"


async def reply(client: AsyncTestClient[Any], tenant: Any, thread_id: UUID, body: str, **headers: str) -> Any:
    return await client.post(
        f"/api/threads/{thread_id}/messages", json={"body": body}, headers={**tenant.headers, **headers}
    )


async def settings_row(db: asyncpg.Connection, tenant: Any, **values: Any) -> None:
    """The tenant's conv_settings row: no quiet hours unless given, plus `values`."""
    columns = {
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "quiet_hours_policy": "delay",
        "cooldown_minutes": 60,
    }
    columns.update(values)
    names = ", ".join(columns)
    marks = ", ".join(f"${i + 2}" for i in range(len(columns)))
    await db.execute(
        f"INSERT INTO conv_settings (tenant_id, {names}) VALUES ($1, {marks})", UUID(tenant.id), *columns.values()
    )


# ---------------------------------------------------------------- owner replies
async def test_an_owner_reply_is_queued_then_sent_once(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    response = await reply(client, tenant, thread_id, "We can come at 3pm 👍")
    assert response.status_code == 202
    assert response.json()["status"] == "pending" and response.json()["kind"] == "reply"
    [row] = await messages(db, "reply")
    assert row["idempotency_key"].startswith("reply:")
    requested = await db.fetchval(
        "SELECT count(*) FROM outbox_events WHERE event_name = 'sms.outbound_requested'"
        " AND payload->>'message_id' = $1",
        str(row["id"]),
    )
    assert requested == 1
    await dispatch_all(db)
    await dispatch_all(db)  # nothing is sent twice
    [text] = [m for m in sent_to(fake_twilio, CALLER) if m["form"]["Body"] == "We can come at 3pm 👍"]
    assert text["form"]["From"] == tenant.number and text["form"]["MessagingServiceSid"] == MESSAGING_SERVICE_SID
    assert text["form"]["StatusCallback"].endswith("/webhooks/twilio/sms/status")
    [row] = await messages(db, "reply")
    assert row["status"] == "accepted" and row["twilio_sid"] == text["sid"] and row["sent_at"] is not None


async def test_the_same_idempotency_key_queues_one_reply(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    first = await reply(client, tenant, thread_id, "On our way", **{"Idempotency-Key": "ui-42"})
    again = await reply(client, tenant, thread_id, "On our way", **{"Idempotency-Key": "ui-42"})
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    other = await reply(client, tenant, thread_id, "On our way")  # no key: a second text
    assert other.json()["id"] != first.json()["id"]
    await dispatch_all(db)
    assert len([m for m in sent_to(fake_twilio, CALLER) if m["form"]["Body"] == "On our way"]) == 2


async def test_a_reply_waits_out_quiet_hours_but_an_owner_alert_does_not(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant(timezone=zone_at_local_hour(23))
    await text_in(client, tenant.number, "Water everywhere, call me")  # no first SMS needed for a text
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, tenant.forward_to)) == 1  # the alert went out at 23:00
    thread_id = await db.fetchval("SELECT id FROM conv_threads")
    await reply(client, tenant, thread_id, "Calling you at 8")
    await dispatch_all(db)
    assert sent_to(fake_twilio, CALLER) == []
    [row] = await messages(db, "reply")
    assert row["status"] == "scheduled" and row["scheduled_for"] > datetime.now(UTC)
    outbox = await db.fetchrow("SELECT * FROM outbox_events WHERE event_name = 'sms.outbound_requested' "
                               "AND dispatched_at IS NULL")  # fmt: skip
    assert outbox["available_at"] == row["scheduled_for"] and outbox["last_error"] == "deferred: quiet hours"


async def test_paused_replies_wait_and_go_out_after_unpause(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, settings_env: Any
) -> None:
    from nmc.events.dispatcher import release_deferred
    from nmc.messaging import PAUSED_REASON

    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    settings_env(PAUSE_OUTBOUND_SMS="true")
    await reply(client, tenant, thread_id, "Paused text")
    await dispatch_all(db)
    assert (await messages(db, "reply"))[0]["status"] == "paused"
    settings_env(PAUSE_OUTBOUND_SMS="false")
    assert await release_deferred(PAUSED_REASON) == 1
    await dispatch_all(db)
    assert (await messages(db, "reply"))[0]["status"] == "accepted"
    assert [m["form"]["Body"] for m in sent_to(fake_twilio, CALLER)][-1] == "Paused text"


async def test_an_unknown_outcome_is_looked_up_not_resent(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    fake_twilio.script([{"drop_after_create": True}], to=CALLER)  # created at Twilio, but we saw a 500
    await reply(client, tenant, thread_id, "Did this arrive?")
    await dispatch_all(db)
    assert (await messages(db, "reply"))[0]["status"] == "sending"
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE dispatched_at IS NULL")
    await dispatch_all(db)
    created = [m for m in sent_to(fake_twilio, CALLER) if m["form"]["Body"] == "Did this arrive?"]
    assert len(created) == 1
    assert (await messages(db, "reply"))[0]["twilio_sid"] == created[0]["sid"]


async def test_21610_on_a_reply_records_the_opt_out(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    fake_twilio.script([{"status": 400, "code": 21610}], to=CALLER)
    await reply(client, tenant, thread_id, "Hello again")
    await dispatch_all(db)
    assert await opted_out(db, tenant.id)
    assert await db.fetchval("SELECT source FROM conv_opt_outs") == "twilio_21610"
    [row] = await messages(db, "reply")
    assert (row["status"], row["error_code"]) == ("failed", 21610)
    assert await db.fetchval("SELECT status FROM conv_threads WHERE id = $1", thread_id) == "opted_out"
    assert await db.fetchval("SELECT count(*) FROM outbox_events_errors") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'caller.opted_out'") == 1


async def test_an_unknown_4xx_parks_the_event(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    fake_twilio.script(
        [{"status": 400, "code": 21606, "message": f"The 'From' number cannot text {CALLER}"}], to=CALLER
    )
    await reply(client, tenant, thread_id, "x")
    await dispatch_all(db)
    parked = await db.fetchrow("SELECT * FROM outbox_events_errors")
    assert parked["event_name"] == "sms.outbound_requested" and "21606" in parked["last_error"]
    assert CALLER not in parked["last_error"]


# ---------------------------------------------------------------- landlines
async def test_a_30006_status_marks_a_landline_that_is_never_texted_again(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    sid = sent_to(fake_twilio, CALLER)[0]["sid"]
    callback = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30006"}
    assert (await post_twilio(client, "/webhooks/twilio/sms/status", callback)).status_code == 200
    fact = await db.fetchrow("SELECT * FROM conv_phone_facts WHERE phone = $1", CALLER)
    assert (fact["line_type"], fact["source"]) == ("landline", "twilio_30006")
    assert (await messages(db, "first_sms"))[0]["error_code"] == 30006

    response = await reply(client, tenant, thread_id, "Hello?")
    assert response.status_code == 409 and "landline" in response.json()["detail"]
    await db.execute(  # a new call, no cooldown in the way
        "INSERT INTO conv_settings (tenant_id, quiet_hours_start, quiet_hours_end, quiet_hours_policy,"
        " cooldown_minutes) VALUES ($1, NULL, NULL, 'delay', 0)",
        UUID(tenant.id),
    )
    await missed_call(client, tenant.number, CALLER)
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, CALLER)) == 1
    latest = (await messages(db, "first_sms"))[-1]
    assert (latest["status"], latest["suppressed_reason"]) == ("suppressed", "landline")


async def test_a_queued_text_to_a_number_found_to_be_a_landline_is_not_sent(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    await reply(client, tenant, thread_id, "queued before we knew")
    await db.execute(
        "INSERT INTO conv_phone_facts (phone, line_type, source) VALUES ($1, 'landline', 'twilio_30006')", CALLER
    )
    await dispatch_all(db)
    [row] = await messages(db, "reply")
    assert (row["status"], row["suppressed_reason"]) == ("suppressed", "landline")


@pytest.fixture
def lookup_on(settings_env: Any, fake_twilio: Any) -> Any:
    from nmc.messaging import use_sms_clients

    settings_env(LOOKUP_LINE_TYPE_BEFORE_FIRST_SMS="true", TWILIO_LOOKUP_BASE_URL=fake_twilio.base_url)
    use_sms_clients()  # the Lookup client is built again for the fake
    return fake_twilio


async def test_the_optional_lookup_skips_landlines_up_front_and_is_cached(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, lookup_on: Any
) -> None:
    tenant = await make_tenant()
    lookup_on.set_line_type(CALLER, "landline")
    await missed_call(client, tenant.number, CALLER)
    await dispatch_all(db)
    assert sent_to(lookup_on, CALLER) == []
    [first] = await messages(db, "first_sms")
    assert (first["status"], first["suppressed_reason"]) == ("suppressed", "landline")
    fact = await db.fetchrow("SELECT * FROM conv_phone_facts WHERE phone = $1", CALLER)
    assert (fact["line_type"], fact["source"]) == ("landline", "lookup")

    await missed_call(client, tenant.number, OTHER_CALLER)  # a mobile: looked up, then texted
    await missed_call(client, tenant.number, CALLER)  # known: not looked up again
    await dispatch_all(db)
    assert lookup_on.lookups() == [CALLER, OTHER_CALLER]
    assert len(sent_to(lookup_on, OTHER_CALLER)) == 1
    assert await db.fetchval("SELECT line_type FROM conv_phone_facts WHERE phone = $1", OTHER_CALLER) == "mobile"


async def test_a_lookup_older_than_180_days_is_asked_again(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, lookup_on: Any
) -> None:
    tenant = await make_tenant()
    await db.execute(
        "INSERT INTO conv_phone_facts (phone, line_type, source, checked_at)"
        " VALUES ($1, 'landline', 'lookup', now() - interval '181 days')",
        CALLER,
    )  # ported to a mobile since
    await missed_call(client, tenant.number, CALLER)
    await dispatch_all(db)
    assert lookup_on.lookups() == [CALLER]
    assert len(sent_to(lookup_on, CALLER)) == 1


async def test_no_lookup_by_default(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await texted_back(client, db, tenant)
    assert fake_twilio.lookups() == []
    assert await db.fetchval("SELECT count(*) FROM conv_phone_facts") == 0


# ---------------------------------------------------------------- owner alerts
async def test_the_owner_is_alerted_of_a_first_reply_and_at_most_hourly_after(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant(name="Joe's Plumbing")
    thread_id = await texted_back(client, db, tenant)
    await text_in(client, tenant.number, "Yes please, the boiler is out")
    await text_in(client, tenant.number, "Also the sink")
    await dispatch_all(db)
    [alert] = sent_to(fake_twilio, tenant.forward_to)
    assert alert["form"]["From"] == tenant.number
    assert CALLER in alert["form"]["Body"] and "the boiler is out" in alert["form"]["Body"]
    assert alert["form"]["Body"].startswith("Joe's Plumbing: new message from")
    [row] = await messages(db, "owner_alert")
    assert row["idempotency_key"].startswith(f"owner_alert:{thread_id}:") and row["thread_id"] == thread_id

    # an hour later the next message alerts again
    await db.execute("UPDATE conv_threads SET last_alerted_at = now() - interval '61 minutes'")
    await text_in(client, tenant.number, "Hello??")
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, tenant.forward_to)) == 2


async def test_a_redelivered_message_event_never_alerts_twice(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    from nmc.conversations.inbound import react_to_message
    from nmc.events.catalog import load_event

    tenant = await make_tenant()
    await text_in(client, tenant.number, "hi")
    row = await db.fetchrow("SELECT * FROM outbox_events WHERE event_name = 'message.received'")
    event = load_event(row["event_name"], row["event_version"], json.loads(row["payload"]))
    await react_to_message(event)
    await react_to_message(event)  # at-least-once delivery
    assert len(await messages(db, "owner_alert")) == 1


async def test_owner_alerts_follow_the_settings(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    on_mobile = await make_tenant()
    await settings_row(db, on_mobile, owner_alert_number="+15551112222")
    silent = await make_tenant()
    await settings_row(db, silent, owner_alerts_enabled=False)
    await text_in(client, on_mobile.number, "hello")
    await text_in(client, silent.number, "hello")
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, "+15551112222")) == 1
    assert sent_to(fake_twilio, on_mobile.forward_to) == sent_to(fake_twilio, silent.forward_to) == []


async def test_the_owner_texting_their_own_number_is_not_alerted(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await text_in(client, tenant.number, "testing", caller=tenant.forward_to)
    await dispatch_all(db)
    assert fake_twilio.messages() == []


# ---------------------------------------------------------------- follow-ups
async def make_due(db: asyncpg.Connection, thread_id: UUID) -> None:
    """Time passes: the follow-up's delay is over."""
    await db.execute("UPDATE conv_threads SET follow_up_due_at = now() - interval '1 second' WHERE id = $1", thread_id)


async def test_one_follow_up_after_the_tenants_delay_when_nobody_answers(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant(name="Joe's Plumbing")
    await settings_row(
        db,
        tenant,
        follow_up_delay_minutes=45,
        follow_up_template="{business_name} again: still need help? STOP=opt out",
    )
    thread_id = await texted_back(client, db, tenant)
    due = await db.fetchval("SELECT follow_up_due_at FROM conv_threads WHERE id = $1", thread_id)
    assert timedelta(minutes=44) < due - datetime.now(UTC) <= timedelta(minutes=45)
    assert await queue_due_follow_ups() == 0  # not due yet

    await make_due(db, thread_id)
    assert await queue_due_follow_ups() == 1
    await dispatch_all(db)
    texts = [m["form"]["Body"] for m in sent_to(fake_twilio, CALLER)]
    assert texts[-1] == "Joe's Plumbing again: still need help? STOP=opt out" and len(texts) == 2
    [row] = await messages(db, "follow_up")
    assert row["idempotency_key"] == f"follow_up:{thread_id}" and row["status"] == "accepted"
    assert await db.fetchval("SELECT follow_up_due_at FROM conv_threads WHERE id = $1", thread_id) is None

    await make_due(db, thread_id)  # never a second one for the thread
    assert await queue_due_follow_ups() == 0
    await db.execute("UPDATE conv_settings SET cooldown_minutes = 0")
    await missed_call(client, tenant.number, CALLER)  # nor after a later first SMS in the same thread
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, CALLER)) == 3
    assert await db.fetchval("SELECT follow_up_due_at FROM conv_threads WHERE id = $1", thread_id) is None


async def test_no_follow_up_by_default(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    assert await db.fetchval("SELECT follow_up_due_at FROM conv_threads WHERE id = $1", thread_id) is None


@pytest.mark.parametrize("what", ["caller replies", "caller opts out", "owner replies", "thread closed"])
async def test_no_follow_up_after_an_answer_an_opt_out_or_closing(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, what: str
) -> None:
    tenant = await make_tenant()
    await settings_row(db, tenant, follow_up_delay_minutes=30)
    thread_id = await texted_back(client, db, tenant)
    assert await db.fetchval("SELECT follow_up_due_at FROM conv_threads WHERE id = $1", thread_id) is not None
    if what == "caller replies":
        await text_in(client, tenant.number, "thanks, all good")
    elif what == "caller opts out":
        await text_in(client, tenant.number, "STOP")
    elif what == "owner replies":
        assert (await reply(client, tenant, thread_id, "Call me back")).status_code == 202
    else:
        assert (await client.post(f"/api/threads/{thread_id}/close", headers=tenant.headers)).status_code == 200
    assert await db.fetchval("SELECT follow_up_due_at FROM conv_threads WHERE id = $1", thread_id) is None
    await make_due(db, thread_id)  # even if it were due, the sweep re-checks
    assert await queue_due_follow_ups() == 0
    assert await messages(db, "follow_up") == []


async def test_a_queued_follow_up_is_stopped_by_a_later_stop(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await settings_row(db, tenant, follow_up_delay_minutes=30)
    thread_id = await texted_back(client, db, tenant)
    await make_due(db, thread_id)
    assert await queue_due_follow_ups() == 1  # queued, not yet sent
    await text_in(client, tenant.number, "stop")
    await dispatch_all(db)
    [row] = await messages(db, "follow_up")
    assert (row["status"], row["suppressed_reason"]) == ("suppressed", "opted_out")
    assert len(sent_to(fake_twilio, CALLER)) == 1


async def test_a_follow_up_due_in_quiet_hours_follows_the_suppress_policy(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await settings_row(db, tenant, follow_up_delay_minutes=30)
    thread_id = await texted_back(client, db, tenant)  # at about 12:00 local time
    # hours later it is 02:00 there, inside the tenant's quiet hours, when the follow-up falls due
    await db.execute("UPDATE tenants SET timezone = $2 WHERE id = $1", UUID(tenant.id), zone_at_local_hour(2))
    await db.execute(
        "UPDATE conv_settings SET quiet_hours_start = '21:00', quiet_hours_end = '08:00',"
        " quiet_hours_policy = 'suppress'"
    )
    await make_due(db, thread_id)
    await queue_due_follow_ups()
    await dispatch_all(db)
    [row] = await messages(db, "follow_up")
    assert (row["status"], row["suppressed_reason"]) == ("suppressed", "quiet_hours")
