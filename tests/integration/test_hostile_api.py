"""Hostile input under `/api`, sent with a valid token: a 422 naming the field (401 for a token whose
claims have the wrong types), never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.clerk import FakeClerk

Client = AsyncTestClient[Any]
ALWAYS_OPEN = {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def assert_invalid(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == field


async def created(client: Client, path: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", "/api/tenant", {"name": "Joe\u0000s"}, "name"),
        ("POST", "/api/resources", {"name": "Tech\u0000"}, "name"),
        (
            "POST",
            "/api/resources",
            {"name": "Tech", "exceptions": [{"date": "2031-01-01", "note": "\u0000"}]},
            "exceptions[0].note",
        ),
        ("POST", "/api/job-types", {"name": "\u0000", "duration_minutes": 60}, "name"),
        ("PUT", "/api/settings/messaging", {"help_text": "Call us\u0000"}, "help_text"),
    ],
)
async def test_a_nul_character_in_a_json_body_is_422_naming_its_path(
    client: Client, make_tenant: Any, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    tenant = await make_tenant()
    response = await client.request(method, path, json=body, headers=tenant.headers)
    assert_invalid(response, field)
    assert "NUL" in response.json()["detail"]


async def test_a_nul_character_in_a_query_parameter_is_422_naming_it(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    assert_invalid(await client.get("/api/threads", params={"cursor": "abc\x00"}, headers=tenant.headers), "cursor")


async def test_busy_blocks_must_end_after_they_start(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    resource = await created(client, "/api/resources", {"name": "Tech"}, tenant.headers)
    start, end = "2031-01-01T10:00:00Z", "2031-01-01T11:00:00Z"
    for bad_end in (start, "2031-01-01T09:00:00Z"):
        body = {"resource_id": resource, "start": start, "end": bad_end}
        assert_invalid(await client.post("/api/busy-blocks", json=body, headers=tenant.headers), "end")
        window = {"start": start, "end": bad_end}
        assert_invalid(await client.get("/api/busy-blocks", params=window, headers=tenant.headers), "end")
    block = await created(
        client, "/api/busy-blocks", {"resource_id": resource, "start": start, "end": end}, tenant.headers
    )
    for change in ({"start": end}, {"end": "2031-01-01T09:00:00Z"}, {"start": "2031-01-01T12:00:00Z"}):
        response = await client.patch(f"/api/busy-blocks/{block}", json=change, headers=tenant.headers)
        assert_invalid(response, "end")


@pytest.mark.parametrize("offset", ["10000001", str(2**63), "99999999999999999999999"])
async def test_a_bookings_offset_beyond_any_list_is_422(client: Client, make_tenant: Any, offset: str) -> None:
    tenant = await make_tenant()
    response = await client.get("/api/bookings", params={"offset": offset}, headers=tenant.headers)
    assert_invalid(response, "offset")


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/busy-blocks", {"start": "2031-01-01T00:00:00"}, "start"),  # no UTC offset
        ("/api/busy-blocks", {"start": "0001-01-01T00:00:00+05:00"}, "start"),
        ("/api/bookings", {"end": "2031-01-01T00:00:00"}, "end"),
        ("/api/bookings", {"start": "9999-12-31T23:00:00-05:00"}, "start"),
        ("/api/kpis", {"start": "9999-12-31", "end": "9999-12-31"}, "start"),
        (
            "/api/availability",
            {"job_type_id": "JOB", "start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"},
            "start",
        ),
    ],
)
async def test_instants_at_the_ends_of_the_calendar_are_422(
    client: Client, make_tenant: Any, path: str, params: dict[str, str], field: str
) -> None:
    tenant = await make_tenant()
    job = await created(client, "/api/job-types", {"name": "Visit", "duration_minutes": 60}, tenant.headers)
    query = {key: job if value == "JOB" else value for key, value in params.items()}
    assert_invalid(await client.get(path, params=query, headers=tenant.headers), field)


async def test_holds_bookings_and_busy_blocks_at_the_ends_of_the_calendar_are_422(
    client: Client, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    resource = await created(client, "/api/resources", {"name": "Tech", "weekly_hours": ALWAYS_OPEN}, tenant.headers)
    job = await created(client, "/api/job-types", {"name": "Visit", "duration_minutes": 60}, tenant.headers)
    late = "9999-12-31T23:00:00Z"
    slot = {"resource_id": resource, "job_type_id": job, "start": late}
    assert_invalid(await client.post("/api/holds", json=slot, headers=tenant.headers), "start")
    assert_invalid(await client.post("/api/bookings", json=slot, headers=tenant.headers), "start")
    block = {"resource_id": resource, "start": "0001-01-01T00:00:00+05:00", "end": "0001-01-02T00:00:00+05:00"}
    assert_invalid(await client.post("/api/busy-blocks", json=block, headers=tenant.headers), "start")
    closed = {"exceptions": [{"date": "9999-12-31", "hours": [["22:00", "06:00"]]}]}
    assert_invalid(await client.patch(f"/api/resources/{resource}", json=closed, headers=tenant.headers), "exceptions")


@pytest.mark.parametrize("timezone", ["America", "A" * 65, "Europe/" + "x" * 300])
async def test_a_timezone_that_is_no_zone_is_422(client: Client, make_tenant: Any, timezone: str) -> None:
    tenant = await make_tenant()
    response = await client.patch("/api/tenant", json={"timezone": timezone}, headers=tenant.headers)
    assert_invalid(response, "timezone")


@pytest.mark.parametrize(
    ("version", "claims"),
    [
        (2, {"o": "org_1"}),
        (2, {"o": ["org_1"]}),
        (2, {"o": {"id": 42, "rol": "admin"}}),
        (2, {"o": {"id": "ORG", "rol": ["admin"]}}),
        (2, {"o": {"id": "org\u0000x"}}),
        (1, {"o": "ORG"}),
        (1, {"org_id": {"id": "ORG"}}),
        (1, {"org_id": "ORG", "org_role": 7}),
    ],
)
async def test_a_signed_token_with_claims_of_the_wrong_type_is_401(
    client: Client, clerk: FakeClerk, make_tenant: Any, version: int, claims: dict[str, Any]
) -> None:
    tenant = await make_tenant()
    extra = {key: tenant.org_id if value == "ORG" else value for key, value in claims.items()}
    if isinstance(extra.get("o"), dict):
        extra["o"] = {key: tenant.org_id if value == "ORG" else value for key, value in extra["o"].items()}
    token = clerk.mint(org_id=tenant.org_id, version=version, extra=extra)
    response = await client.get("/api/tenant", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_an_audience_claim_of_the_wrong_type_is_401(
    client: Client, clerk: FakeClerk, make_tenant: Any, settings_env: Any
) -> None:
    settings_env(CLERK_JWT_AUDIENCE="https://app.nmc.test")
    tenant = await make_tenant()
    for claims in ({"azp": ["https://app.nmc.test"]}, {"azp": None, "aud": [{"x": 1}]}):
        token = clerk.mint(org_id=tenant.org_id, azp="", extra=claims)
        response = await client.get("/api/tenant", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, response.text
    good = clerk.mint(org_id=tenant.org_id)
    assert (await client.get("/api/tenant", headers={"Authorization": f"Bearer {good}"})).status_code == 200
