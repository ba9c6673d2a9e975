"""Clerk organisations become tenants (issue #15): `POST /webhooks/clerk` through the shared pipeline,
Svix-verified, deduped by `svix-id`, right whatever the order; a session token for an organisation not
heard of yet creates the same tenant on the spot."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from tests.fakes.clerk import (
    ClerkWebhooks,
    FakeClerk,
    clerk_event,
    clerk_millis,
    deleted_organization_data,
    membership_data,
    organization_data,
)

PATH = "/webhooks/clerk"
SECRET = ClerkWebhooks().secret
T0 = clerk_millis() - 60_000  # a minute ago, in Clerk's milliseconds


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def clerk_hooks(settings_env: Any) -> ClerkWebhooks:
    settings_env(CLERK_WEBHOOK_SECRET=SECRET)
    return ClerkWebhooks()


async def send(client: AsyncTestClient[Any], hooks: ClerkWebhooks, event: dict[str, Any], **options: Any) -> Any:
    body, headers = hooks.signed(event, **options)
    return await client.post(PATH, content=body, headers=headers)


async def tenant_row(db: asyncpg.Connection, org_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT id, name, status, timezone, deactivated_at FROM tenants WHERE clerk_org_id = $1", org_id
    )


async def events(db: asyncpg.Connection, name: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = $1", name))


async def test_organization_created_makes_an_onboarding_tenant(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks
) -> None:
    response = await send(
        client, clerk_hooks, clerk_event("organization.created", organization_data("org_new", "Ace Roofing"))
    )
    assert response.status_code == 200, response.text
    tenant = await tenant_row(db, "org_new")
    assert tenant is not None
    assert (tenant["name"], tenant["status"], tenant["timezone"]) == ("Ace Roofing", "onboarding", "America/New_York")
    assert await events(db, "tenant.created") == 1
    ledger = await db.fetchrow("SELECT provider, kind, external_id, idempotency_token, tenant_id FROM webhook_events")
    assert (ledger["provider"], ledger["kind"]) == ("clerk", "event")
    assert ledger["external_id"] == f"event:{ledger['idempotency_token']}"


async def test_a_redelivery_with_the_same_svix_id_changes_nothing(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks
) -> None:
    before = counter("webhook_dedupe_hits_total", provider="clerk")
    event = clerk_event("organization.created", organization_data("org_dup", "Dup Co"))
    first = await send(client, clerk_hooks, event, msg_id="msg_same")
    again = await send(client, clerk_hooks, event, msg_id="msg_same")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.text == first.text
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1
    assert await db.fetchval("SELECT count(*) FROM tenants") == 1
    assert await events(db, "tenant.created") == 1
    assert counter("webhook_dedupe_hits_total", provider="clerk") == before + 1


async def test_an_older_update_arriving_late_does_not_win(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks
) -> None:
    created = organization_data("org_ooo", "First Name", created_at=T0)
    renamed = organization_data("org_ooo", "Newest Name", created_at=T0, updated_at=T0 + 2000)
    middle = organization_data("org_ooo", "Middle Name", created_at=T0, updated_at=T0 + 1000)
    for event_type, data in (
        ("organization.updated", renamed),
        ("organization.created", created),
        ("organization.updated", middle),
    ):
        assert (await send(client, clerk_hooks, clerk_event(event_type, data))).status_code == 200
    tenant = await tenant_row(db, "org_ooo")
    assert tenant is not None
    assert (tenant["name"], tenant["status"]) == ("Newest Name", "onboarding")
    assert await db.fetchval("SELECT count(*) FROM tenants") == 1
    assert await events(db, "tenant.created") == 1


@pytest.mark.parametrize("deleted_first", [False, True])
async def test_a_deleted_organization_stays_deactivated_whatever_the_order(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks, deleted_first: bool
) -> None:
    created = clerk_event("organization.created", organization_data("org_gone", "Gone Co", created_at=T0))
    updated = clerk_event(
        "organization.updated", organization_data("org_gone", "Gone Co 2", created_at=T0, updated_at=T0 + 10)
    )
    deleted = clerk_event("organization.deleted", deleted_organization_data("org_gone"))
    order = [deleted, updated, created] if deleted_first else [created, updated, deleted, updated]
    for event in order:
        assert (await send(client, clerk_hooks, event)).status_code == 200
    tenant = await tenant_row(db, "org_gone")
    assert tenant is not None
    assert tenant["status"] == "deactivated"
    assert tenant["deactivated_at"] is not None
    assert tenant["name"] == "Gone Co 2"  # a late creation still names the tombstone
    assert await events(db, "tenant.deactivated") == 1


async def test_memberships_keep_users_owner_or_member_in_any_order(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks
) -> None:
    org = organization_data("org_team", "Team Co", created_at=T0)
    admin = membership_data("orgmem_1", org, "user_boss", role="org:admin", updated_at=T0 + 1)
    member_v1 = membership_data("orgmem_2", org, "user_tech", role="org:member", updated_at=T0 + 1)
    member_v2 = membership_data("orgmem_2", org, "user_tech", role="org:admin", updated_at=T0 + 5)
    # The membership arrives before its organisation: the tenant comes from the nested organisation.
    for data in (admin, member_v2, member_v1):
        event_type = "organizationMembership.created" if data is not member_v2 else "organizationMembership.updated"
        assert (await send(client, clerk_hooks, clerk_event(event_type, data))).status_code == 200
    assert (await send(client, clerk_hooks, clerk_event("organization.created", org))).status_code == 200
    users = await db.fetch(
        "SELECT u.clerk_user_id, u.role, u.clerk_role, u.removed_at, t.clerk_org_id"
        " FROM users u JOIN tenants t ON t.id = u.tenant_id ORDER BY u.clerk_user_id"
    )
    assert [(u["clerk_user_id"], u["role"], u["clerk_role"], u["removed_at"]) for u in users] == [
        ("user_boss", "owner", "org:admin", None),
        ("user_tech", "owner", "org:admin", None),  # the newer update won over the late creation
    ]
    assert {u["clerk_org_id"] for u in users} == {"org_team"}

    removed = clerk_event("organizationMembership.deleted", member_v2, timestamp=T0 + 10)
    assert (await send(client, clerk_hooks, removed)).status_code == 200
    late = clerk_event("organizationMembership.updated", member_v2)  # an old delivery retried after the removal
    assert (await send(client, clerk_hooks, late)).status_code == 200
    assert await db.fetchval("SELECT removed_at IS NOT NULL FROM users WHERE clerk_user_id = 'user_tech'")
    # Invited again later: a new membership, newer than the removal.
    again = membership_data("orgmem_3", org, "user_tech", role="org:member", updated_at=T0 + 20)
    assert (await send(client, clerk_hooks, clerk_event("organizationMembership.created", again))).status_code == 200
    row = await db.fetchrow("SELECT role, removed_at, clerk_membership_id FROM users WHERE clerk_user_id = 'user_tech'")
    assert (row["role"], row["removed_at"], row["clerk_membership_id"]) == ("member", None, "orgmem_3")


async def test_a_removal_without_an_event_timestamp_still_wins_a_tie(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks
) -> None:
    org = organization_data("org_tie", "Tie Co", created_at=T0)
    membership = membership_data("orgmem_t", org, "user_t", updated_at=T0 + 1)
    removal = clerk_event("organizationMembership.deleted", membership, timestamp=-1)
    creation = clerk_event("organizationMembership.created", membership, timestamp=-1)
    for event in (removal, creation):
        assert (await send(client, clerk_hooks, event)).status_code == 200
    assert await db.fetchval("SELECT removed_at IS NOT NULL FROM users WHERE clerk_user_id = 'user_t'")


@pytest.mark.parametrize(
    "how",
    ["tampered", "wrong_secret", "stale", "no_signature", "garbage_signature", "no_id"],
)
async def test_bad_svix_signatures_are_400_and_counted(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks, how: str
) -> None:
    before = counter("webhook_signature_failures_total", provider="clerk")
    event = clerk_event("organization.created", organization_data("org_evil", "Evil"))
    choices: dict[str, dict[str, Any]] = {
        "tampered": {"tamper": True},
        "wrong_secret": {"secret": "whsec_" + "QUJD" * 8},
        "stale": {"timestamp": int(time.time()) - 3600},
    }
    options = choices.get(how, {})
    body, headers = clerk_hooks.signed(event, **options)
    if how == "no_signature":
        del headers["svix-signature"]
    if how == "garbage_signature":
        headers["svix-signature"] = "v1 no-comma-here, v1,%%%"
    if how == "no_id":
        del headers["svix-id"]
    response = await client.post(PATH, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert counter("webhook_signature_failures_total", provider="clerk") == before + 1
    assert await db.fetchval("SELECT count(*) FROM tenants") == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_a_rotated_secret_and_its_predecessor_are_both_accepted(
    client: AsyncTestClient[Any], db: asyncpg.Connection, settings_env: Any
) -> None:
    old, new = ClerkWebhooks(), ClerkWebhooks("whsec_" + "bmV3LXNlY3JldC1mb3ItY2xlcmstd2ViaG9va3M=")
    settings_env(CLERK_WEBHOOK_SECRET=f"{new.secret}, {old.secret}")
    for hooks, org_id in ((old, "org_old"), (new, "org_new2")):
        assert (
            await send(client, hooks, clerk_event("organization.created", organization_data(org_id)))
        ).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM tenants") == 2


async def test_no_secret_configured_refuses_everything(client: AsyncTestClient[Any], db: asyncpg.Connection) -> None:
    response = await send(client, ClerkWebhooks(), clerk_event("organization.created", organization_data("org_x")))
    assert response.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM tenants") == 0


async def test_other_event_types_are_answered_and_not_stored(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks
) -> None:
    response = await send(client, clerk_hooks, clerk_event("user.created", {"id": "user_1", "object": "user"}))
    assert response.status_code == 200
    assert response.json() == {"received": True, "ignored": True}
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_a_signed_but_malformed_event_is_a_400_naming_the_field(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk_hooks: ClerkWebhooks
) -> None:
    org = organization_data("org_bad")
    membership = membership_data("orgmem_bad", org, "user_bad")
    del membership["public_user_data"]
    response = await send(client, clerk_hooks, clerk_event("organizationMembership.created", membership))
    assert response.status_code == 400, response.text
    assert "public_user_data" in response.text
    no_type = await send(client, clerk_hooks, {"data": org, "object": "event"})
    assert no_type.status_code == 400
    assert no_type.json()["field"] == "type"
    long_id = organization_data("org_" + "x" * 100)
    assert (await send(client, clerk_hooks, clerk_event("organization.created", long_id))).status_code == 400
    assert await db.fetchval("SELECT count(*) FROM tenants") == 0


async def test_a_token_for_an_unknown_org_creates_the_tenant_on_the_spot(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, clerk_hooks: ClerkWebhooks
) -> None:
    token = clerk.mint(sub="user_first", org_id="org_early", org_slug="early-bird", exp_in=3600)
    response = await client.get("/api/tenant", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["status"], body["clerk_org_id"]) == ("early-bird", "onboarding", "org_early")
    assert await events(db, "tenant.created") == 1
    user = await db.fetchrow("SELECT clerk_user_id, role, clerk_role FROM users")
    assert (user["clerk_user_id"], user["role"], user["clerk_role"]) == ("user_first", "owner", "admin")
    # A second request reads only; the delayed webhook then names the same tenant.
    assert (await client.get("/api/tenant", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    created = clerk_event("organization.created", organization_data("org_early", "Early Bird Plumbing"))
    assert (await send(client, clerk_hooks, created)).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM tenants") == 1
    assert (await tenant_row(db, "org_early"))["name"] == "Early Bird Plumbing"  # type: ignore[index]
    assert await events(db, "tenant.created") == 1


async def test_a_deleted_organizations_token_is_refused(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, clerk_hooks: ClerkWebhooks
) -> None:
    assert (
        await send(client, clerk_hooks, clerk_event("organization.deleted", deleted_organization_data("org_d")))
    ).status_code == 200
    token = clerk.mint(org_id="org_d", exp_in=3600)
    response = await client.get("/api/tenant", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert await db.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize(
    ("version", "role", "owner"),
    [(1, "org:admin", True), (2, "org:admin", True), (2, "org:member", False), (1, "org:member", False)],
)
async def test_owner_or_member_from_either_token_version(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, version: int, role: str, owner: bool
) -> None:
    token = clerk.mint(sub="user_v", org_id="org_v", version=version, role=role, exp_in=3600)
    assert (await client.get("/api/tenant", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    assert await db.fetchval("SELECT role FROM users WHERE clerk_user_id = 'user_v'") == (
        "owner" if owner else "member"
    )


async def test_an_unusable_secret_refuses_without_a_server_error(
    client: AsyncTestClient[Any], db: asyncpg.Connection, settings_env: Any
) -> None:
    settings_env(CLERK_WEBHOOK_SECRET="whsec_, not-base64-%%%")
    response = await send(client, ClerkWebhooks(), clerk_event("organization.created", organization_data("org_y")))
    assert response.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM tenants") == 0
