"""The web app in-process (real Litestar, real Postgres), plus tenants and their Clerk tokens."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nmc.events.subscribers import _REGISTRY
from nmc.worker import load_subscribers
from tests.fakes.clerk import FakeClerk

_numbers = itertools.count(1000)


def zone_at_local_hour(hour: int) -> str:
    """A fixed-offset IANA zone where the local time is now about `hour`:00 (tests run at any hour)."""
    offset = (hour - datetime.now(UTC).hour + 12) % 24 - 12  # -12..+11
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


@dataclass(frozen=True)
class TenantFixture:
    id: str
    org_id: str
    number: str
    forward_to: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def app(db: asyncpg.Connection) -> Litestar:
    from nmc.app import create_app

    return create_app()


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
def make_tenant(clerk: FakeClerk) -> Any:
    """Create a tenant the way an operator does (the service, as `nmc tenants create` uses it)."""
    from nmc.identity import TenantCreate, create_tenant

    async def make(name: str = "Joe's Plumbing", timezone: str | None = None) -> TenantFixture:
        n = next(_numbers)
        org_id = f"org_{n}"
        tenant = await create_tenant(
            TenantCreate(
                name=name,
                twilio_number=f"+1555000{n:04d}",
                forwarding_number=f"+1555999{n:04d}",
                timezone=timezone or zone_at_local_hour(12),
                clerk_org_id=org_id,
            )
        )
        return TenantFixture(
            id=str(tenant.id),
            org_id=org_id,
            number=f"+1555000{n:04d}",
            forward_to=f"+1555999{n:04d}",
            token=clerk.mint(org_id=org_id, exp_in=3600),
        )

    return make


@pytest.fixture(autouse=True, scope="session")
def subscribers_loaded() -> None:
    """Tests dispatch in-process, as the worker does once every module's subscribers are loaded."""
    load_subscribers()


@pytest.fixture
def handlers() -> Iterator[None]:
    """Isolate the module-level subscriber registry: tests register their own handlers only."""
    load_subscribers()  # the modules' own subscribers are in what is restored afterwards
    saved = {name: list(registered) for name, registered in _REGISTRY.items()}
    _REGISTRY.clear()
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)
