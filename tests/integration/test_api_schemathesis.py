"""Schemathesis against the app's own OpenAPI schema: no `/api` operation answers with a server error.

In-process: schemathesis' ASGI transport calls `create_app()` on the test database, with the Clerk
token of a tenant made for this test. Every operation gets schema-valid and schema-breaking examples
(`not_a_server_error` is the only check: a 4xx is a fine answer to nonsense). Bounded and
derandomized — the same examples on every run, well under a minute; for a deeper local run:
`NMC_SCHEMATHESIS_EXAMPLES=200 just test tests/integration/test_api_schemathesis.py`.

The fuzzed tenant may create and delete its own data only: a bystander tenant's rows are compared
before and after.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from litestar import Litestar
from litestar.testing import AsyncTestClient
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from tests.integration.conftest import TenantFixture

EXAMPLES_PER_OPERATION = int(os.environ.get("NMC_SCHEMATHESIS_EXAMPLES", "15"))
# Everything a tenant owns through the API, as one fingerprint per table.
TENANT_DATA = """
    SELECT (SELECT md5(string_agg(to_jsonb(t)::text, '' ORDER BY id)) FROM tenants t WHERE id = $1),
           (SELECT md5(string_agg(to_jsonb(r)::text, '' ORDER BY id)) FROM sched_resources r WHERE tenant_id = $1),
           (SELECT md5(string_agg(to_jsonb(j)::text, '' ORDER BY id)) FROM sched_job_types j WHERE tenant_id = $1),
           (SELECT md5(string_agg(to_jsonb(b)::text, '' ORDER BY id)) FROM sched_busy_blocks b WHERE tenant_id = $1),
           (SELECT md5(string_agg(to_jsonb(s)::text, '')) FROM conv_settings s WHERE tenant_id = $1)
"""


async def seed(client: AsyncTestClient[Litestar], tenant: TenantFixture) -> None:
    """A technician, a job type and a busy block, so lists and searches have something to find."""
    resource = await client.post("/api/resources", json={"name": "Tech"}, headers=tenant.headers)
    job = await client.post("/api/job-types", json={"name": "Visit", "duration_minutes": 60}, headers=tenant.headers)
    block = {"resource_id": resource.json()["id"], "start": "2031-01-06T10:00:00Z", "end": "2031-01-06T11:00:00Z"}
    busy = await client.post("/api/busy-blocks", json=block, headers=tenant.headers)
    assert [resource.status_code, job.status_code, busy.status_code] == [201, 201, 201]


@pytest.fixture
async def bystander(
    db: asyncpg.Connection, make_tenant: Any, client: AsyncTestClient[Litestar]
) -> AsyncIterator[TenantFixture]:
    """Another tenant whose data must come out of the run untouched."""
    tenant: TenantFixture = await make_tenant(name="Bystander Heating")
    await seed(client, tenant)
    before = await db.fetchrow(TENANT_DATA, tenant.id)
    yield tenant
    assert await db.fetchrow(TENANT_DATA, tenant.id) == before


def server_errors(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> list[str]:
    """What schemathesis found wrong with one operation, in one generation mode (empty: nothing)."""

    @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        case.validate_response(case.call(), checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:
        pass  # no schema-breaking example exists (an operation without parameters)
    except (Exception, BaseExceptionGroup) as exc:
        return [f"{operation.label} ({mode.value}): {exc}"]
    return []


async def test_no_api_operation_answers_with_a_server_error(
    app: Litestar,
    client: AsyncTestClient[Litestar],
    make_tenant: Any,
    bystander: TenantFixture,
    fake_twilio: Any,
    settings_env: Any,
) -> None:
    # The numbers API (issue #15) asks Twilio: the fake answers, so only our own errors would be 5xx.
    settings_env(TWILIO_MESSAGING_API_BASE_URL=fake_twilio.base_url)
    fuzzed: TenantFixture = await make_tenant(name="Fuzzed Plumbing")
    await seed(client, fuzzed)
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app).include(path_regex="^/api/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 25  # every /api operation, not a schema that failed to load
    failures = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for failure in server_errors(operation, mode, fuzzed.headers)
    ]
    assert not failures, "\n\n".join(failures)
