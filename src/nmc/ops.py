"""What the CLI does against the database, outside any request."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.exceptions import IntegrityError
from sqlalchemy import select, text

from nmc.db import MIGRATIONS_DIR, session_scope
from nmc.identity.models import Tenant
from nmc.identity.schemas import TenantCreate, TenantRead
from nmc.identity.service import TenantService

QUERIES_DIR = MIGRATIONS_DIR / "queries"


async def create_tenant(data: TenantCreate) -> TenantRead:
    try:
        async with session_scope() as session:
            service = TenantService(session=session)
            tenant = await service.create_tenant(data)
            return service.to_read(tenant)
    except IntegrityError as exc:
        raise ValueError(f"a tenant already uses number {data.twilio_number} or Clerk org {data.clerk_org_id}") from exc


async def list_tenants() -> list[TenantRead]:
    async with session_scope() as session:
        tenants = (await session.execute(select(Tenant).order_by(Tenant.created_at))).scalars()
        return [TenantService.to_read(t) for t in tenants]


def named_queries() -> list[str]:
    return sorted(p.stem for p in QUERIES_DIR.glob("*.sql"))


async def run_named_query(name: str) -> list[dict[str, Any]]:
    path = QUERIES_DIR / f"{name}.sql"
    if "/" in name or not path.is_file():
        raise FileNotFoundError(f"no query {name!r}; available: {', '.join(named_queries())}")
    async with session_scope() as session:
        result = await session.execute(text(path.read_text()))
        return [dict(row) for row in result.mappings()]
