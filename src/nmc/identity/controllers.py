"""The caller's own tenant. Every handler is scoped by the authenticated principal's tenant."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, get, patch
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from nmc.identity.auth import Principal
from nmc.identity.schemas import TenantRead, TenantUpdate
from nmc.identity.service import TenantService


class TenantController(Controller):
    path = "/tenant"
    tags = ["Tenant"]
    dependencies = {"tenants": Provide(create_service_provider(TenantService))}

    @get(summary="The caller's tenant")
    async def read_tenant(
        self, request: Request[Principal, Any, Any], tenants: NamedDependency[TenantService]
    ) -> TenantRead:
        return tenants.to_read(await tenants.get(request.user.tenant_id))

    @patch(summary="Update the caller's tenant (name, timezone, business hours)")
    async def update_tenant(
        self,
        request: Request[Principal, Any, Any],
        tenants: NamedDependency[TenantService],
        data: JSONBody[TenantUpdate],
    ) -> TenantRead:
        return tenants.to_read(await tenants.update_tenant(request.user.tenant_id, data))
