"""`/healthz`, `/metrics` (runbook §5 names) and correlation ids, on the real app and database."""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

import nmc.db
from tests.conftest import TEST_ENVIRONMENT, TWILIO_TOKEN

RUNBOOK_METRICS = (
    "slo_first_sms_p95_seconds",
    "booking_post_p95_ms",
    "outbox_dispatch_lag_seconds",
    "webhook_dedupe_hits_total",
    "webhook_signature_failures_total",
    "calendar_sync_errors_total",
    "scheduling_book_conflict_total",
)


def exposed_names(text: str) -> set[str]:
    """Every metric name in a Prometheus text exposition, as on-call would type it in a query."""
    names = set(re.findall(r"^# (?:HELP|TYPE) (\S+)", text, flags=re.MULTILINE))
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def sample_value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def fresh_engine() -> Iterator[None]:
    """Drop the process-wide engine before and after, so a test can build the app on other settings."""
    nmc.db._config = None
    yield
    nmc.db._config = None


# ------------------------------------------------------------------------------------ /healthz


async def test_healthz_is_200_while_the_database_answers(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_healthz_is_503_when_the_database_is_unreachable(
    db: asyncpg.Connection, settings_env: Any, fresh_engine: None
) -> None:
    settings_env(DATABASE_URL=f"postgresql://127.0.0.1:{closed_port()}/nmc_test")
    from nmc.app import create_app

    async with AsyncTestClient(app=create_app()) as down:
        response = await down.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


# ------------------------------------------------------------------------------------ /metrics


async def test_metrics_exposes_every_runbook_metric(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    names = exposed_names(response.text)
    missing = [name for name in RUNBOOK_METRICS if name not in names]
    assert missing == [], f"runbook §5 metrics not exposed: {missing}"


async def test_metrics_content_type_is_prometheus_text_with_one_charset(client: AsyncTestClient[Litestar]) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST

    response = await client.get("/metrics")
    content_type = response.headers["content-type"]
    assert content_type.startswith("text/plain; version=")
    # A repeated parameter makes the header invalid for strict parsers (Prometheus 3 refuses the scrape).
    params = [p.split("=")[0].strip().lower() for p in content_type.split(";")[1:]]
    assert len(params) == len(set(params)), content_type
    assert content_type == CONTENT_TYPE_LATEST


async def test_outbox_dispatch_lag_reflects_the_oldest_undispatched_row(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection
) -> None:
    insert = (
        "INSERT INTO outbox_events (id, event_name, event_version, payload, correlation_id, created_at, "
        "available_at, dispatched_at) VALUES (gen_random_uuid(), 'tenant.created', 1, '{}'::jsonb, 'c', "
        "now() - $1::interval, now() - $1::interval, $2)"
    )
    response = await client.get("/metrics")
    assert sample_value(response.text, "outbox_dispatch_lag_seconds") == 0.0  # nothing waits

    # An older row that was dispatched does not count; the oldest waiting one does.
    await db.execute(insert, timedelta(hours=1), await db.fetchval("SELECT now()"))
    await db.execute(insert, timedelta(seconds=120), None)
    await db.execute(insert, timedelta(seconds=5), None)
    response = await client.get("/metrics")
    lag = sample_value(response.text, "outbox_dispatch_lag_seconds")
    assert lag is not None
    assert 120 <= lag < 3600
    assert sample_value(response.text, "outbox_events_pending") == 2

    # A row deferred on purpose (quiet hours: the dispatcher's deferral note) is not lag until it falls due.
    await db.execute("DELETE FROM outbox_events")
    deferred = insert.replace("dispatched_at)", "dispatched_at, last_error)").replace(
        "now() - $1::interval, $2)", "now() + $1::interval, $2, 'deferred: quiet hours')"
    )
    await db.execute(deferred, timedelta(hours=8), None)
    response = await client.get("/metrics")
    assert sample_value(response.text, "outbox_dispatch_lag_seconds") == 0.0


async def test_request_metrics_count_requests_by_route_template(
    client: AsyncTestClient[Litestar], make_tenant: Any
) -> None:
    tenant = await make_tenant()
    labels = {"method": "GET", "path": "/api/tenant", "status_code": "200", "app_name": "nmc"}
    before = sample_value((await client.get("/metrics")).text, "nmc_requests_total", **labels) or 0.0

    for _ in range(2):
        assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 200
    assert (await client.get("/api/tenant")).status_code == 401

    text = (await client.get("/metrics")).text
    assert sample_value(text, "nmc_requests_total", **labels) == before + 2
    assert (sample_value(text, "nmc_requests_total", **{**labels, "status_code": "401"}) or 0) >= 1
    assert sample_value(text, "nmc_request_duration_seconds_count", **labels) is not None
    # the scrape itself is not counted
    assert sample_value(text, "nmc_requests_total", path="/metrics") is None


# ------------------------------------------------------------------------------------ correlation


async def test_x_request_id_is_echoed(client: AsyncTestClient[Litestar], make_tenant: Any) -> None:
    tenant = await make_tenant()
    for path, headers in (("/healthz", {}), ("/api/tenant", tenant.headers), ("/api/tenant", {})):
        response = await client.get(path, headers={**headers, "X-Request-ID": "abc-123"})
        assert response.headers["x-request-id"] == "abc-123", path


async def test_a_correlation_id_is_made_when_none_or_a_bad_one_is_sent(client: AsyncTestClient[Litestar]) -> None:
    first = (await client.get("/healthz")).headers["x-request-id"]
    second = (await client.get("/healthz")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second
    for bad in ("has spaces in it", "x" * 101, "<script>"):
        made = (await client.get("/healthz", headers={"X-Request-ID": bad})).headers["x-request-id"]
        assert made != bad
        assert re.fullmatch(r"[0-9a-f]{32}", made)


async def test_an_event_published_during_a_request_carries_its_correlation_id(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, make_tenant: Any
) -> None:
    """A missed-call webhook writes `call.missed` in its own transaction: the event carries X-Request-ID."""
    tenant = await make_tenant()
    path = "/webhooks/twilio/voice/dial-status"
    params = {
        "CallSid": "CA" + secrets.token_hex(16),
        "From": "+15557770001",
        "To": tenant.number,
        "DialCallStatus": "no-answer",
        "DialCallDuration": "0",
    }
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"{TEST_ENVIRONMENT['PUBLIC_BASE_URL']}{path}", params)
    response = await client.post(
        path, data=params, headers={"X-Twilio-Signature": signature, "X-Request-ID": "req-missed-1"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-missed-1"
    row = await db.fetchrow(
        "SELECT correlation_id, tenant_id::text FROM outbox_events WHERE event_name = 'call.missed'"
    )
    assert row is not None, "the dial-status webhook published no call.missed"
    assert row["correlation_id"] == "req-missed-1"
    assert row["tenant_id"] == tenant.id


async def test_request_metrics_group_parametrised_paths_under_their_template(
    client: AsyncTestClient[Litestar],
) -> None:
    """Label cardinality stays bounded: ids in paths never become label values."""
    template = "/schema/{path}"  # the OpenAPI router's own parametrised route
    labels = {"method": "GET", "path": template, "app_name": "nmc"}
    text = (await client.get("/metrics")).text
    before = sum(sample_value(text, "nmc_requests_total", **labels, status_code=c) or 0.0 for c in ("200", "404"))
    for concrete in ("/schema/nope-1", "/schema/nope-2"):
        await client.get(concrete)
    text = (await client.get("/metrics")).text
    after = sum(sample_value(text, "nmc_requests_total", **labels, status_code=code) or 0.0 for code in ("200", "404"))
    assert after == before + 2
    assert "nope-1" not in text and "nope-2" not in text
