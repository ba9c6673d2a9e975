"""Issue #13, "metrics that tell the truth": every figure read at the web's `/metrics` against the real
app, the real dispatcher, the fake Twilio API and real Postgres."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any
from uuid import uuid4

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nmc.observability import providers
from tests.integration.test_first_sms import CALLER, dispatch_pending
from tests.integration.test_observability import sample_value
from tests.integration.twilio_webhooks import missed_call


async def scrape(client: AsyncTestClient[Litestar], **headers: str) -> str:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    found = sample_value(text, name, **labels)
    assert found is not None, f"{name} {labels} not exposed"
    return found


# ------------------------------------------------------------------------------ first-SMS SLO


async def test_slo_p95_is_nan_without_a_sample_never_zero(client: AsyncTestClient[Litestar]) -> None:
    text = await scrape(client)
    assert math.isnan(value(text, "slo_first_sms_p95_seconds"))
    assert value(text, "slo_first_sms_samples") == 0


async def _message(
    db: asyncpg.Connection, tenant_id: str, latency_ms: float, *, held: bool, sent_ago: timedelta
) -> None:
    thread = await db.fetchval(
        "INSERT INTO conv_threads (id, tenant_id, caller, tenant_number, status) "
        "VALUES (gen_random_uuid(), $1, $2, '+15550000000', 'closed') RETURNING id",
        tenant_id,
        f"+1555{uuid4().int % 10**7:07d}",
    )
    await db.execute(
        "INSERT INTO conv_messages (id, tenant_id, thread_id, idempotency_key, direction, kind, to_number, "
        "from_number, body, status, sent_at, latency_ms, held_on_purpose) "
        "VALUES (gen_random_uuid(), $1, $2, $3, 'outbound', 'first_sms', '+15551112222', '+15550000000', 'hi', "
        "'accepted', now() - $4::interval, $5, $6)",
        tenant_id,
        thread,
        f"first_sms:{uuid4()}",
        sent_ago,
        latency_ms,
        held,
    )


async def test_slo_p95_leaves_out_texts_held_on_purpose_and_old_ones(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    for _ in range(19):
        await _message(db, tenant.id, 100.0, held=False, sent_ago=timedelta(minutes=1))
    await _message(
        db, tenant.id, 9_000.0, held=False, sent_ago=timedelta(minutes=1)
    )  # one slow text in 20: P95 in between
    for _ in range(30):  # quiet hours ended: hours of deliberate wait, not slowness
        await _message(db, tenant.id, 8 * 3600 * 1000.0, held=True, sent_ago=timedelta(minutes=1))
    await _message(db, tenant.id, 60_000.0, held=False, sent_ago=timedelta(minutes=11))  # outside the window
    text = await scrape(client)
    assert value(text, "slo_first_sms_samples") == 20
    p95 = value(text, "slo_first_sms_p95_seconds")
    assert 0.1 < p95 < 9.0  # percentile_cont between the 19th (0.1 s) and the 20th (9 s)


async def test_an_accepted_first_sms_lands_in_the_rollup_and_retention_never_takes_it_back(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    before = value(await scrape(client), "first_sms_latency_seconds_count")
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1
    text = await scrape(client)
    assert value(text, "first_sms_latency_seconds_count") == before + 1
    assert value(text, "first_sms_latency_seconds_bucket", le="+Inf") == before + 1
    assert value(text, "first_sms_latency_seconds_sum") > 0
    assert value(text, "slo_first_sms_samples") == 1
    # a redelivered event changes nothing: counted once
    await db.execute(
        "UPDATE outbox_events SET dispatched_at = NULL, available_at = now() WHERE event_name = 'call.missed'"
    )
    await dispatch_pending(db)
    assert value(await scrape(client), "first_sms_latency_seconds_count") == before + 1

    await db.execute("DELETE FROM conv_messages")  # what retention does after 180 days
    text = await scrape(client)
    assert value(text, "first_sms_latency_seconds_count") == before + 1
    assert math.isnan(value(text, "slo_first_sms_p95_seconds"))


async def test_a_text_held_by_quiet_hours_is_counted_apart(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, settings_env: Any
) -> None:
    tenant = await make_tenant()
    settings_env(PAUSE_OUTBOUND_SMS="true")
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    assert await db.fetchval("SELECT status FROM conv_messages WHERE kind = 'first_sms'") == "paused"
    assert value(await scrape(client), "first_sms_overdue_calls") == 0  # held on purpose: not overdue
    settings_env(PAUSE_OUTBOUND_SMS="false")
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE dispatched_at IS NULL")
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1
    text = await scrape(client)
    assert value(text, "first_sms_held_on_purpose_total") == 1
    assert value(text, "first_sms_latency_seconds_count") == 0
    assert value(text, "slo_first_sms_samples") == 0


# ------------------------------------------------------------------------------ overdue calls and lag

_EVENT = (
    "INSERT INTO outbox_events (id, event_name, event_version, payload, correlation_id, created_at, available_at, "
    "attempts, last_error) VALUES (gen_random_uuid(), $1, 1, '{}'::jsonb, 'c', now() - $2::interval, "
    "now() + $3::interval, $4, $5)"
)


async def test_missed_calls_without_a_first_sms_outcome_are_overdue_unless_held_on_purpose(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection
) -> None:
    await db.execute(_EVENT, "call.missed", timedelta(seconds=2), timedelta(0), 0, None)  # within the SLO
    await db.execute(_EVENT, "call.missed", timedelta(seconds=30), timedelta(0), 0, None)  # nobody dispatched it
    await db.execute(_EVENT, "call.missed", timedelta(seconds=40), timedelta(seconds=20), 3, "SmsOutcomeUnknown: 503")
    await db.execute(
        _EVENT, "call.missed", timedelta(minutes=5), timedelta(seconds=20), 1, "deferred: sending circuit open"
    )
    await db.execute(_EVENT, "call.missed", timedelta(hours=3), timedelta(hours=5), 0, "deferred: quiet hours")
    await db.execute(
        _EVENT, "call.missed", timedelta(minutes=3), timedelta(seconds=5), 0, "deferred: PAUSE_OUTBOUND_SMS"
    )
    await db.execute(_EVENT, "tenant.created", timedelta(minutes=9), timedelta(0), 0, None)  # not a missed call
    text = await scrape(client)
    assert value(text, "first_sms_overdue_calls") == 3
    assert 299 <= value(text, "first_sms_overdue_oldest_seconds") < 400


async def test_outbox_lag_counts_events_that_keep_failing_but_not_deliberate_deferrals(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection
) -> None:
    assert value(await scrape(client), "outbox_dispatch_lag_seconds") == 0
    # deferred on purpose until later: not lag
    await db.execute(_EVENT, "call.missed", timedelta(hours=8), timedelta(hours=1), 0, "deferred: quiet hours")
    assert value(await scrape(client), "outbox_dispatch_lag_seconds") == 0
    # failing for 10 minutes, now in backoff (available_at in the future): lag from its creation
    await db.execute(_EVENT, "call.missed", timedelta(minutes=10), timedelta(minutes=2), 6, "SmsOutcomeUnknown: 500")
    text = await scrape(client)
    assert 600 <= value(text, "outbox_dispatch_lag_seconds") < 700
    assert value(text, "outbox_events_in_backoff") == 1
    # a deferral that fell due a minute ago and was not picked up: lag from when it fell due
    await db.execute("DELETE FROM outbox_events")
    await db.execute(_EVENT, "call.missed", timedelta(hours=8), -timedelta(minutes=1), 0, "deferred: quiet hours")
    assert 60 <= value(await scrape(client), "outbox_dispatch_lag_seconds") < 120


# ------------------------------------------------------------------------------ processes, database


async def test_heartbeats_say_which_processes_are_alive(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection
) -> None:
    """Rows of a kind of process no real process beats here (another test's jobs process may be alive)."""
    text = await scrape(client)
    assert value(text, "process_instances_alive", process="worker") >= 0  # always exposed, 0 when none
    assert value(text, "process_instances_alive", process="jobs") >= 0
    beat = (
        "INSERT INTO worker_heartbeats (worker_id, process, host, pid, beat_at) "
        "VALUES (gen_random_uuid(), $1, 'h', 1, now() - $2::interval)"
    )
    await db.execute(beat, "probe-a", timedelta(seconds=0))
    await db.execute(beat, "probe-a", timedelta(minutes=5))  # a process that died without cleaning up
    await db.execute(beat, "probe-b", timedelta(minutes=2))
    text = await scrape(client)
    assert value(text, "process_instances_alive", process="probe-a") == 1
    assert value(text, "process_instances_alive", process="probe-b") == 0
    assert value(text, "process_heartbeat_age_seconds", process="probe-a") < 5
    assert 120 <= value(text, "process_heartbeat_age_seconds", process="probe-b") < 200


async def test_database_saturation_is_exposed(client: AsyncTestClient[Litestar]) -> None:
    text = await scrape(client)
    in_use, maximum = value(text, "db_connections_in_use"), value(text, "db_connections_max")
    assert 1 <= in_use <= maximum
    for name in ("db_connections_active", "db_connections_idle_in_transaction", "db_lock_waits"):
        assert value(text, name) >= 0


async def test_retention_success_is_exposed(client: AsyncTestClient[Litestar], db: asyncpg.Connection) -> None:
    from jobs.retention import purge_expired

    assert sample_value(await scrape(client), "maintenance_last_success_timestamp_seconds", task="retention") is None
    purge_expired()
    now = await db.fetchval("SELECT extract(epoch FROM now())")
    assert (
        abs(value(await scrape(client), "maintenance_last_success_timestamp_seconds", task="retention") - float(now))
        < 60
    )


# ------------------------------------------------------------------------------ provider requests


async def test_twilio_requests_are_counted_by_outcome_and_timed(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    labels = {"provider": "twilio", "operation": "messages.create"}
    text = await scrape(client)
    ok_before = sample_value(text, "provider_requests_total", **labels, outcome="ok", status="201") or 0
    errors_before = sample_value(text, "provider_requests_total", **labels, outcome="server_error", status="503") or 0
    count_before = sample_value(text, "provider_request_duration_seconds_count", **labels) or 0

    fake_twilio.script([{"status": 503}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)  # 503: retried later
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE dispatched_at IS NULL")
    await dispatch_pending(db)  # the lookup (messages.list), then the send
    text = await scrape(client)
    assert value(text, "provider_requests_total", **labels, outcome="server_error", status="503") == errors_before + 1
    assert value(text, "provider_requests_total", **labels, outcome="ok", status="201") == ok_before + 1
    assert value(text, "provider_request_duration_seconds_count", **labels) == count_before + 2
    assert (
        value(text, "provider_requests_total", provider="twilio", operation="messages.list", outcome="ok", status="200")
        >= 1
    )


async def test_provider_counts_written_by_another_process_add_up(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection
) -> None:
    """The flusher thread's path (psycopg), as the worker and jobs processes write."""
    import psycopg

    from tests.conftest import TEST_DATABASE_URL

    providers.observe_request("twilio", "test.op", providers.TIMEOUT, None, 12.0)
    providers.observe_request("twilio", "test.op", providers.TIMEOUT, None, 0.02)
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as connection:
        assert providers.flush_sync(connection) == 1
    providers.observe_request("twilio", "test.op", providers.TIMEOUT, None, 0.02)
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as connection:
        providers.flush_sync(connection)
    text = await scrape(client)
    assert (
        value(text, "provider_requests_total", provider="twilio", operation="test.op", outcome="timeout", status="none")
        == 3
    )
    labels = {"provider": "twilio", "operation": "test.op"}
    assert value(text, "provider_request_duration_seconds_bucket", **labels, le="0.025") == 2
    assert value(text, "provider_request_duration_seconds_bucket", **labels, le="10.0") == 2
    assert value(text, "provider_request_duration_seconds_bucket", **labels, le="+Inf") == 3


# ------------------------------------------------------------------------------ bearer token


async def test_metrics_requires_the_bearer_token_when_one_is_set(db: asyncpg.Connection, settings_env: Any) -> None:
    from nmc.app import create_app

    settings_env(METRICS_TOKEN="s3cret-scrape-token")
    async with AsyncTestClient(app=create_app()) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        response = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
        assert response.status_code == 200
        assert "slo_first_sms_p95_seconds" in response.text
        assert (await client.get("/healthz")).status_code == 200  # the health check stays open
