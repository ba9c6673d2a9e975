"""Identity: tenants (the businesses), their Twilio numbers, Clerk sign-in and the tenant REST API.

Other modules read tenants through this face, and in SQL only through the published views
`tenant_profiles` and `tenant_numbers` (never `tenants` or `tenant_phone_numbers`).
"""

from nmc.identity.auth import ClerkAuthenticationMiddleware, Principal
from nmc.identity.controllers import TenantController
from nmc.identity.models import TenantStatus
from nmc.identity.schemas import TenantCreate, TenantRead
from nmc.identity.service import NumberOwner, TenantService, create_tenant, list_tenants, owner_of

__all__ = [
    "ClerkAuthenticationMiddleware",
    "NumberOwner",
    "Principal",
    "TenantController",
    "TenantCreate",
    "TenantRead",
    "TenantService",
    "TenantStatus",
    "create_tenant",
    "list_tenants",
    "owner_of",
]
