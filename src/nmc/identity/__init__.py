"""Identity: tenants (the businesses), their Twilio numbers, their users (Clerk organisation members),
Clerk sign-in, Clerk's organisation webhooks, and the tenant REST API.

Other modules read tenants through this face, and in SQL only through the published views
`tenant_profiles` and `tenant_numbers` (never `tenants` or `tenant_phone_numbers`).
"""

from nmc.identity.auth import ClerkAuthenticationMiddleware, Principal
from nmc.identity.clerk_webhooks import CLERK_WEBHOOKS, ClerkWebhooks
from nmc.identity.controllers import TenantController
from nmc.identity.models import NumberSource, TenantStatus, UserRole
from nmc.identity.numbers import (
    REQUIRED_STEPS,
    ForwardingCheck,
    TenantNumber,
    TenantProfile,
    add_number,
    all_live_numbers,
    change_forwarding,
    check_forwarding_code,
    live_number,
    mark_released,
    number_for_purchase_key,
    set_forwarding_code,
    set_purchase_key,
    tenant_number,
    tenant_numbers,
    tenant_profile,
)
from nmc.identity.schemas import TenantCreate, TenantRead
from nmc.identity.service import NumberOwner, TenantService, create_tenant, list_tenants, owner_of

__all__ = [
    "CLERK_WEBHOOKS",
    "REQUIRED_STEPS",
    "ClerkAuthenticationMiddleware",
    "ClerkWebhooks",
    "ForwardingCheck",
    "NumberOwner",
    "NumberSource",
    "Principal",
    "TenantController",
    "TenantCreate",
    "TenantNumber",
    "TenantProfile",
    "TenantRead",
    "TenantService",
    "TenantStatus",
    "UserRole",
    "add_number",
    "all_live_numbers",
    "change_forwarding",
    "check_forwarding_code",
    "create_tenant",
    "list_tenants",
    "live_number",
    "mark_released",
    "number_for_purchase_key",
    "owner_of",
    "set_forwarding_code",
    "set_purchase_key",
    "tenant_number",
    "tenant_numbers",
    "tenant_profile",
]
