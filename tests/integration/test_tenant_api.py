from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar.testing import AsyncTestClient

from tests.fakes.clerk import FakeClerk


async def test_reads_and_updates_own_tenant(client: AsyncTestClient[Any], make_tenant: Any) -> None:
    tenant = await make_tenant()
    response = await client.get("/api/tenant", headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == tenant.id
    assert response.json()["phone_numbers"][0]["twilio_number"] == tenant.number

    response = await client.patch("/api/tenant", json={"timezone": "America/Chicago"}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["timezone"] == "America/Chicago"


async def test_bad_timezone_is_422_naming_the_field(client: AsyncTestClient[Any], make_tenant: Any) -> None:
    tenant = await make_tenant()
    response = await client.patch("/api/tenant", json={"timezone": "Mars/Olympus"}, headers=tenant.headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == "timezone"


async def test_missing_and_bad_tokens_are_401(client: AsyncTestClient[Any], clerk: FakeClerk, make_tenant: Any) -> None:
    tenant = await make_tenant()
    assert (await client.get("/api/tenant")).status_code == 401
    expired = clerk.mint(org_id=tenant.org_id, exp_in=-120)
    assert (await client.get("/api/tenant", headers={"Authorization": f"Bearer {expired}"})).status_code == 401
    forged = clerk.mint(org_id=tenant.org_id, sign_with_foreign_key=True)
    response = await client.get("/api/tenant", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_no_org_is_403_and_an_inactive_tenant_is_403(
    client: AsyncTestClient[Any], clerk: FakeClerk, make_tenant: Any, db: Any
) -> None:
    tenant = await make_tenant()
    no_org = clerk.mint(org_id=None)
    assert (await client.get("/api/tenant", headers={"Authorization": f"Bearer {no_org}"})).status_code == 403
    await db.execute("UPDATE tenants SET status = 'inactive' WHERE id = $1", UUID(tenant.id))
    assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 403


async def test_an_org_not_heard_of_yet_becomes_an_onboarding_tenant(
    client: AsyncTestClient[Any], clerk: FakeClerk
) -> None:
    """Issue #15: Clerk's webhook may come late; the token's organisation becomes its tenant at once."""
    stranger = clerk.mint(org_id="org_nobody")
    response = await client.get("/api/tenant", headers={"Authorization": f"Bearer {stranger}"})
    assert response.status_code == 200
    assert response.json()["status"] == "onboarding"


async def test_v1_tokens_map_their_org_too(client: AsyncTestClient[Any], clerk: FakeClerk, make_tenant: Any) -> None:
    tenant = await make_tenant()
    v1 = clerk.mint(org_id=tenant.org_id, version=1)
    response = await client.get("/api/tenant", headers={"Authorization": f"Bearer {v1}"})
    assert response.status_code == 200
    assert response.json()["id"] == tenant.id
