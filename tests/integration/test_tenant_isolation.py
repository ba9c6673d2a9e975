"""Tenant isolation over every `/api` route the app has, now and later.

Routes are discovered from `create_app().routes`, never listed by hand. Tenant A calls each of them
with tenant B's object ids in the path; A must never see B's identifiers and B's rows must not change.
A route with a path parameter this file cannot fill fails the test: add a factory below.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from twilio.request_validator import RequestValidator

from nmc.events.dispatcher import dispatch
from tests.conftest import TEST_ENVIRONMENT, TWILIO_TOKEN

SKIPPED_METHODS = {"OPTIONS", "HEAD"}
WRITE_METHODS = {"POST", "PUT", "PATCH"}
PLAUSIBLE_BODY = {"name": "hijack", "timezone": "UTC", "status": "closed", "body": "hijack"}
B_NAME = "Bravo Secret Plumbing"
B_CALLER = "+15550004242"


@dataclass
class TenantB:
    id: str
    org_id: str
    number: str
    forward_to: str
    ids: dict[str, list[str]] = field(default_factory=dict)  # table → B's row ids


Factory = Callable[[TenantB], Awaitable[str]]


def owned(table: str) -> Factory:
    """The id of one of B's rows in `table`."""

    async def factory(b: TenantB) -> str:
        rows = b.ids.get(table)
        if not rows:
            pytest.fail(f"tenant B has no row in {table}: seed one in seed_tenant_b() so the route is exercised")
        return rows[0]

    return factory


async def _tenant_id(b: TenantB) -> str:
    return b.id


async def _number(b: TenantB) -> str:
    return b.number


# Path parameter name → B's object id. A route whose path parameter is missing here fails the test.
PATH_PARAMETER_FACTORIES: dict[str, Factory] = {
    "tenant_id": _tenant_id,
    "number": _number,
    "phone_number_id": owned("tenant_phone_numbers"),
    "number_id": owned("tenant_phone_numbers"),
    "user_id": owned("users"),
    "call_id": owned("conv_calls"),
    "thread_id": owned("conv_threads"),
    "message_id": owned("conv_messages"),
    "opt_out_id": owned("conv_opt_outs"),
    "event_id": owned("outbox_events"),
    "webhook_event_id": owned("webhook_events"),
    "resource_id": owned("sched_resources"),
    "job_type_id": owned("sched_job_types"),
    "busy_block_id": owned("sched_busy_blocks"),
    "hold_id": owned("sched_holds"),
    "booking_id": owned("sched_bookings"),
    "connection_id": owned("calendar_connections"),
}


def api_routes(app: Litestar) -> list[tuple[HTTPRoute, str]]:
    routes = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        if route.path != "/api" and not route.path.startswith("/api/"):
            continue
        for method in sorted(route.methods - SKIPPED_METHODS):
            routes.append((route, method))
    return routes


async def concrete_path(route: HTTPRoute, b: TenantB) -> str:
    path = route.path
    for name, definition in route.path_parameters.items():
        path = path.replace("{" + definition.full + "}", await PATH_PARAMETER_FACTORIES[name](b))
    return path


async def tables_with_tenant_id(db: asyncpg.Connection) -> list[str]:
    rows = await db.fetch(
        "SELECT DISTINCT c.table_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.column_name = 'tenant_id' AND c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
        "ORDER BY 1"
    )
    return [r["table_name"] for r in rows]


async def snapshot(db: asyncpg.Connection, tenant_id: str, tables: list[str]) -> dict[str, list[str]]:
    """Every row of the tenant, as text, table by table (plus the tenant row itself)."""
    state = {
        "tenants": [
            r["row"] for r in await db.fetch("SELECT t::text AS row FROM tenants t WHERE id = $1::uuid", tenant_id)
        ]
    }
    for table in tables:
        rows = await db.fetch(f'SELECT x::text AS row FROM "{table}" x WHERE tenant_id = $1::uuid', tenant_id)
        state[table] = sorted(r["row"] for r in rows)
    return state


async def signed_missed_call(client: AsyncTestClient[Litestar], to: str, caller: str) -> None:
    path = "/webhooks/twilio/voice/dial-status"
    params = {
        "CallSid": "CA" + secrets.token_hex(16),
        "From": caller,
        "To": to,
        "DialCallStatus": "no-answer",
        "DialCallDuration": "0",
    }
    url = f"{TEST_ENVIRONMENT['PUBLIC_BASE_URL']}{path}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, f"seeding B's missed call failed: {response.status_code} {response.text}"


async def seed_tenant_b(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, make_tenant: Any, tables: list[str]
) -> TenantB:
    """B with data in as many tenant-owned tables as the product can fill today, through its own flows."""
    made = await make_tenant(name=B_NAME)
    b = TenantB(id=made.id, org_id=made.org_id, number=made.number, forward_to=made.forward_to)
    await db.execute(
        "INSERT INTO users (id, tenant_id, clerk_user_id, clerk_org_id, role, created_at, updated_at) "
        "VALUES (gen_random_uuid(), $1::uuid, 'user_bravo', $2, 'org:admin', now(), now())",
        b.id,
        b.org_id,
    )
    # A missed call to B (webhook ledger, call, call.missed) and its first SMS (thread, message).
    await signed_missed_call(client, b.number, B_CALLER)
    for row in await db.fetch(
        "SELECT id FROM outbox_events WHERE dispatched_at IS NULL AND tenant_id = $1::uuid", b.id
    ):
        await dispatch(row["id"])
    await seed_scheduling(client, {"Authorization": f"Bearer {made.token}"})
    # A calendar connection of B's technician (as the OAuth callback stores it; the grant is not used here).
    await db.execute(
        "INSERT INTO calendar_connections (id, tenant_id, resource_id, provider, calendar_id, refresh_token_encrypted) "
        "SELECT gen_random_uuid(), tenant_id, id, 'google', 'primary', 'sealed' FROM sched_resources "
        "WHERE tenant_id = $1::uuid LIMIT 1",
        b.id,
    )
    for table in tables:
        rows = (
            await db.fetch(f'SELECT id::text AS id FROM "{table}" WHERE tenant_id = $1::uuid', b.id)
            if await _has_id(db, table)
            else []
        )
        b.ids[table] = [r["id"] for r in rows]
    return b


async def seed_scheduling(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> None:
    """B's technician (with a date exception), job type, busy block, a live hold and a booking, via B's API."""
    day = (datetime.now(UTC) + timedelta(days=8)).date()
    day += timedelta(days=-day.weekday() + 7)  # a Monday, more than a week ahead
    hours = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    exceptions = [{"date": (day + timedelta(days=1)).isoformat(), "hours": []}]
    made: dict[str, Any] = {}
    for name, path, body in [
        ("resource", "/api/resources", {"name": "Bravo Tech", "weekly_hours": hours, "exceptions": exceptions}),
        ("job_type", "/api/job-types", {"name": "Bravo Job", "duration_minutes": 60, "min_notice_minutes": 0}),
    ]:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 201, f"seeding B's {name} failed: {response.text}"
        made[name] = response.json()["id"]
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    slot = {"resource_id": made["resource"], "job_type_id": made["job_type"]}
    for path, body in [
        (
            "/api/busy-blocks",
            {"resource_id": made["resource"], "start": at.isoformat(), "end": (at + timedelta(hours=1)).isoformat()},
        ),
        ("/api/holds", {**slot, "start": (at + timedelta(hours=2)).isoformat()}),
        ("/api/bookings", {**slot, "start": (at + timedelta(hours=4)).isoformat(), "customer_name": B_NAME}),
    ]:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 201, f"seeding {path} for B failed: {response.text}"


async def _has_id(db: asyncpg.Connection, table: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 "
            "AND column_name = 'id'",
            table,
        )
    )


def b_identifiers(b: TenantB) -> set[str]:
    found = {b.id, b.org_id, b.number, b.forward_to, B_NAME, B_CALLER}
    for ids in b.ids.values():
        found.update(ids)
    return found


def test_every_api_route_is_discovered() -> None:
    from nmc.app import create_app

    paths = {route.path for route, _ in api_routes(create_app())}
    assert "/api/tenant" in paths  # the discovery itself works


def test_every_path_parameter_has_a_factory() -> None:
    from nmc.app import create_app

    missing = {
        f"{method} {route.path}: {name}"
        for route, method in api_routes(create_app())
        for name in route.path_parameters
        if name not in PATH_PARAMETER_FACTORIES
    }
    assert not missing, (
        "routes with path parameters the isolation test cannot fill with tenant B's ids; "
        f"add them to PATH_PARAMETER_FACTORIES in {__name__}: {sorted(missing)}"
    )


async def test_tenant_a_never_sees_or_changes_tenant_b(
    app: Litestar,
    client: AsyncTestClient[Litestar],
    db: asyncpg.Connection,
    make_tenant: Any,
    fake_twilio: Any,
) -> None:
    tables = await tables_with_tenant_id(db)
    assert {"tenant_phone_numbers", "outbox_events"} <= set(tables)
    b = await seed_tenant_b(client, db, make_tenant, tables)
    a = await make_tenant(name="Alpha Heating")
    assert b.ids["tenant_phone_numbers"] and b.ids["outbox_events"], "B's seed data is missing"
    assert b.ids["sched_holds"] and b.ids["sched_bookings"], "B's scheduling seed data is missing"
    before = await snapshot(db, b.id, tables)
    secrets_of_b = b_identifiers(b)

    routes = api_routes(app)
    assert routes, "no /api routes discovered"
    unfillable = sorted(
        f"{method} {route.path}: {name}"
        for route, method in routes
        for name in route.path_parameters
        if name not in PATH_PARAMETER_FACTORIES
    )
    if unfillable:
        pytest.fail(f"add path parameter factories to {__name__}.PATH_PARAMETER_FACTORIES for {unfillable}")

    leaks: list[str] = []
    for route, method in routes:
        path = await concrete_path(route, b)
        body = PLAUSIBLE_BODY if method in WRITE_METHODS else None
        response = await client.request(method, path, headers=a.headers, json=body)
        where = f"{method} {path} as tenant A"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
        text = response.text
        leaks += [f"{where} shows B's {value!r}" for value in secrets_of_b if value in text]
        # Whatever A sees of a tenant is A's.
        if response.headers.get("content-type", "").startswith("application/json") and text:
            payload = json.loads(text)
            if isinstance(payload, dict) and "id" in payload and "phone_numbers" in payload:
                assert payload["id"] == a.id, where
    assert leaks == []
    assert await snapshot(db, b.id, tables) == before, "tenant A's requests changed tenant B's rows"


async def test_every_api_route_requires_a_token(
    app: Litestar, client: AsyncTestClient[Litestar], settings_env: Any
) -> None:
    settings_env(OPS_API_TOKEN="o" * 40)  # unset, the operators' routes answer 404 (they are hidden)
    routes = api_routes(app)
    assert routes
    for route, method in routes:
        path = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", route.path)
        body = PLAUSIBLE_BODY if method in WRITE_METHODS else None
        response = await client.request(method, path, json=body)
        assert response.status_code == 401, f"{method} {path} without a token: {response.status_code}"
        assert response.headers["content-type"].startswith("application/problem+json")
