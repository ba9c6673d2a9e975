"""Clerk organisations as tenants, memberships as users: applied in any order, any number of times.

Clerk's webhooks come at least once and in no particular order (providers.md), so every change is
guarded by the version it carries and the database decides in one statement:

- an organisation's state (`organization.created|updated`, or the organisation inside a membership
  event) is applied only when its `updated_at` is newer than the one last applied
  (`tenants.clerk_updated_at`); the first one seen creates the tenant (`onboarding`);
- `organization.deleted` is final: the tenant is `deactivated` (texting off at once; its numbers are
  released by telephony on `tenant.deactivated`), and a deletion seen before the creation leaves a
  deactivated tenant that a late `organization.created` only names;
- a membership's state is applied when its `updated_at` is newer than the user row's; a removal
  (`organizationMembership.deleted`) is stamped with the event's time, at least the membership's own
  `updated_at`, and wins a tie, so a late `created` of the same membership cannot bring it back while
  a later membership (re-invited: a newer `updated_at`) does.

A session token for an organisation not heard of yet (the webhook delayed) creates the same tenant on
the spot (`tenant_for_session`), unversioned: any webhook then applies over it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg
import structlog

from nmc.events import TenantCreated, TenantDeactivated, publish_on
from nmc.identity.models import DEFAULT_BUSINESS_HOURS, TenantStatus, UserRole
from nmc.observability.correlation import current_correlation_id

log = structlog.get_logger(module="identity")

DEFAULT_TIMEZONE = "America/New_York"
NAME_LENGTH = 200  # tenants.name
_HOURS = json.dumps(DEFAULT_BUSINESS_HOURS)


@dataclass(frozen=True)
class OrganizationState:
    """An organisation as a Clerk webhook (or a session token) shows it."""

    org_id: str
    name: str | None
    version: datetime | None  # Clerk's `updated_at`; None: unversioned (a session token)


@dataclass(frozen=True)
class MembershipState:
    org: OrganizationState
    membership_id: str | None
    user_id: str
    clerk_role: str | None
    identifier: str | None
    version: datetime | None


def clerk_time(milliseconds: int | None) -> datetime | None:
    """Clerk's timestamps are milliseconds since the epoch."""
    return None if milliseconds is None else datetime.fromtimestamp(milliseconds / 1000, UTC)


def user_role(clerk_role: str | None) -> UserRole:
    """Owner for Clerk's admin role in either spelling (`org:admin` in webhooks and v1 tokens, `admin`
    in v2 tokens; an `owner` role of a custom set too), member for any other role."""
    bare = (clerk_role or "").removeprefix("org:")
    return UserRole.OWNER if bare in {"admin", "owner"} else UserRole.MEMBER


def _name(org: OrganizationState) -> str:
    return (org.name or org.org_id)[:NAME_LENGTH]


# The tenant for an organisation: created `onboarding`, or renamed when this version is newer. A
# deactivated tenant keeps its status (deletion is final). `inserted`: whether the row is new.
_APPLY_ORGANIZATION = f"""
    INSERT INTO tenants AS t (id, name, timezone, business_hours, status, clerk_org_id, clerk_updated_at,
                              created_at, updated_at)
    VALUES ($1, $2, '{DEFAULT_TIMEZONE}', $3::jsonb, '{TenantStatus.ONBOARDING}', $4, $5, now(), now())
    ON CONFLICT (clerk_org_id) DO UPDATE SET name = EXCLUDED.name, clerk_updated_at = EXCLUDED.clerk_updated_at,
                                             updated_at = now()
    WHERE EXCLUDED.clerk_updated_at IS NOT NULL
      AND (t.clerk_updated_at IS NULL OR t.clerk_updated_at < EXCLUDED.clerk_updated_at)
    RETURNING id, xmax = 0 AS inserted
"""
_TENANT_OF_ORG = "SELECT id, status FROM tenants WHERE clerk_org_id = $1"
# A deleted organisation: its tenant deactivated (a tombstone when none was known yet, named by its id).
_DEACTIVATE = f"""
    INSERT INTO tenants AS t (id, name, timezone, business_hours, status, clerk_org_id, deactivated_at,
                              created_at, updated_at)
    VALUES ($1, $2, '{DEFAULT_TIMEZONE}', $3::jsonb, '{TenantStatus.DEACTIVATED}', $2, $4, now(), now())
    ON CONFLICT (clerk_org_id) DO UPDATE SET status = '{TenantStatus.DEACTIVATED}',
                                             deactivated_at = EXCLUDED.deactivated_at, updated_at = now()
    WHERE t.status <> '{TenantStatus.DEACTIVATED}'
    RETURNING id, xmax = 0 AS inserted
"""
_APPLY_MEMBERSHIP = """
    INSERT INTO users AS u (id, tenant_id, clerk_user_id, clerk_org_id, role, clerk_role, clerk_membership_id,
                            identifier, clerk_updated_at, removed_at, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, now(), now())
    ON CONFLICT (clerk_user_id, clerk_org_id) DO UPDATE SET
        tenant_id = EXCLUDED.tenant_id, role = EXCLUDED.role, clerk_role = EXCLUDED.clerk_role,
        clerk_membership_id = EXCLUDED.clerk_membership_id, identifier = coalesce(EXCLUDED.identifier, u.identifier),
        clerk_updated_at = EXCLUDED.clerk_updated_at, removed_at = NULL, updated_at = now()
    WHERE EXCLUDED.clerk_updated_at IS NOT NULL
      AND (u.clerk_updated_at IS NULL OR u.clerk_updated_at < EXCLUDED.clerk_updated_at)
    RETURNING id
"""
_REMOVE_MEMBERSHIP = """
    INSERT INTO users AS u (id, tenant_id, clerk_user_id, clerk_org_id, role, clerk_role, clerk_membership_id,
                            identifier, clerk_updated_at, removed_at, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, now(), now())
    ON CONFLICT (clerk_user_id, clerk_org_id) DO UPDATE SET
        removed_at = EXCLUDED.removed_at, clerk_updated_at = EXCLUDED.clerk_updated_at, updated_at = now()
    WHERE u.clerk_updated_at IS NULL OR u.clerk_updated_at <= EXCLUDED.clerk_updated_at
    RETURNING id
"""
# A session's member, when the webhook has not told us yet (never over a row a webhook wrote).
_SESSION_MEMBER = """
    INSERT INTO users (id, tenant_id, clerk_user_id, clerk_org_id, role, clerk_role, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, now(), now())
    ON CONFLICT (clerk_user_id, clerk_org_id) DO NOTHING
"""


async def _created(connection: asyncpg.Connection, tenant_id: UUID, name: str) -> None:
    await publish_on(
        connection, TenantCreated(tenant_id=tenant_id, business_name=name, correlation_id=current_correlation_id())
    )


async def apply_organization(connection: asyncpg.Connection, org: OrganizationState) -> UUID:
    """`organization.created|updated`: the org's tenant, created or renamed when this state is newer."""
    row = await connection.fetchrow(_APPLY_ORGANIZATION, uuid4(), _name(org), _HOURS, org.org_id, org.version)
    if row is None:  # an older (or equal) state than the one applied: nothing changes
        existing = await connection.fetchrow(_TENANT_OF_ORG, org.org_id)
        log.info("clerk.organization_stale", org_id=org.org_id, version=org.version)
        return UUID(str(existing["id"]))
    if row["inserted"]:
        log.info("clerk.tenant_created", org_id=org.org_id, tenant_id=str(row["id"]))
        await _created(connection, row["id"], _name(org))
    return UUID(str(row["id"]))


async def deactivate_organization(connection: asyncpg.Connection, org_id: str, at: datetime) -> UUID:
    """`organization.deleted`: the tenant deactivated once; `tenant.deactivated` published on the change."""
    row = await connection.fetchrow(_DEACTIVATE, uuid4(), org_id, _HOURS, at)
    if row is None:
        existing = await connection.fetchrow(_TENANT_OF_ORG, org_id)
        return UUID(str(existing["id"]))
    tenant_id = UUID(str(row["id"]))
    log.info("clerk.tenant_deactivated", org_id=org_id, tenant_id=str(tenant_id), before_creation=row["inserted"])
    await publish_on(
        connection,
        TenantDeactivated(
            tenant_id=tenant_id, clerk_org_id=org_id, deactivated_at=at, correlation_id=current_correlation_id()
        ),
    )
    return tenant_id


async def apply_membership(connection: asyncpg.Connection, membership: MembershipState) -> UUID:
    tenant_id = await apply_organization(connection, membership.org)
    await connection.execute(
        _APPLY_MEMBERSHIP,
        uuid4(),
        tenant_id,
        membership.user_id,
        membership.org.org_id,
        user_role(membership.clerk_role),
        membership.clerk_role,
        membership.membership_id,
        membership.identifier,
        membership.version,
    )
    return tenant_id


async def remove_membership(connection: asyncpg.Connection, membership: MembershipState, at: datetime) -> UUID:
    tenant_id = await apply_organization(connection, membership.org)
    removed_at = max(at, membership.version) if membership.version else at
    await connection.execute(
        _REMOVE_MEMBERSHIP,
        uuid4(),
        tenant_id,
        membership.user_id,
        membership.org.org_id,
        user_role(membership.clerk_role),
        membership.clerk_role,
        membership.membership_id,
        membership.identifier,
        removed_at,
    )
    return tenant_id


async def tenant_of_org(connection: asyncpg.Connection, org_id: str) -> UUID | None:
    row = await connection.fetchrow(_TENANT_OF_ORG, org_id)
    return UUID(str(row["id"])) if row else None


_SESSION_TENANT = """
    SELECT t.id, t.status, u.id IS NOT NULL AS known_member
    FROM tenants t LEFT JOIN users u ON u.clerk_org_id = t.clerk_org_id AND u.clerk_user_id = $2
    WHERE t.clerk_org_id = $1
"""


async def tenant_for_session(
    connection: asyncpg.Connection, org_id: str, org_slug: str | None, user_id: str, clerk_role: str | None
) -> tuple[UUID, str]:
    """(tenant id, status) for a signed-in member: one read when both are known. Otherwise the
    organisation's tenant is created on the spot as `organization.created` would create it (named by
    its slug until a webhook names it), and the member recorded unless a webhook recorded them first."""
    row = await connection.fetchrow(_SESSION_TENANT, org_id, user_id)
    if row is not None and row["known_member"]:
        return UUID(str(row["id"])), str(row["status"])
    if row is None:
        tenant_id = await apply_organization(connection, OrganizationState(org_id, org_slug, None))
        status = str((await connection.fetchrow(_TENANT_OF_ORG, org_id))["status"])
        log.info("clerk.tenant_from_session", org_id=org_id, tenant_id=str(tenant_id))
    else:
        tenant_id, status = UUID(str(row["id"])), str(row["status"])
    if status != TenantStatus.DEACTIVATED:
        await connection.execute(
            _SESSION_MEMBER, uuid4(), tenant_id, user_id, org_id, user_role(clerk_role), clerk_role
        )
    return tenant_id, status
