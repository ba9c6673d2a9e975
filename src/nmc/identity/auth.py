"""Clerk session JWTs for everything under `/api`.

Litestar's JWT auth verifies tokens with one fixed secret or key; Clerk rotates RS256 keys published
as a JWKS, so keys are fetched (async, cached, refreshed on an unknown `kid`) and PyJWT verifies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import jwt
import structlog
from litestar._asgi.utils import wrap_in_exception_handler
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import Receive, Scope, Send

from nmc.db import raw_connection, session_scope
from nmc.identity.clerk import tenant_for_session, user_role
from nmc.identity.models import SIGNED_IN_STATUSES, TenantStatus, UserRole
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="identity")

LEEWAY_SECONDS = 5
MIN_REFRESH_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: a Clerk user acting for the tenant their organisation maps to."""

    user_id: str
    org_id: str
    org_role: str | None
    tenant_id: UUID

    @property
    def is_owner(self) -> bool:
        """The organisation's admin (`org:admin`, or `admin` in a v2 token): may buy and release numbers."""
        return user_role(self.org_role) == UserRole.OWNER


class JwksCache:
    """The issuer's signing keys by `kid`; an unknown `kid` triggers one (rate-limited) refresh."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Any:
        if kid not in self._keys:
            await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise jwt.InvalidTokenError(f"unknown signing key {kid!r}") from None

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < MIN_REFRESH_INTERVAL_SECONDS and self._keys:
                return
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(self.url)
                response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
            self._keys = {key.key_id: key.key for key in keys if key.key_id}
            self._fetched_at = time.monotonic()


_jwks: JwksCache | None = None


def jwks_cache(settings: Settings) -> JwksCache:
    global _jwks
    if _jwks is None or _jwks.url != settings.CLERK_JWKS_URL:
        _jwks = JwksCache(settings.CLERK_JWKS_URL)
    return _jwks


async def verify_session_token(token: str, settings: Settings) -> dict[str, Any]:
    """Signature, `exp`/`nbf` (small leeway), `iss`, and `azp`/`aud` when an audience is set."""
    if not settings.CLERK_JWKS_URL:
        raise jwt.InvalidTokenError("CLERK_JWKS_URL is not configured")
    header = jwt.get_unverified_header(token)
    if header.get("alg") != "RS256":
        raise jwt.InvalidAlgorithmError("only RS256 session tokens are accepted")
    key = await jwks_cache(settings).key_for(str(header.get("kid")))
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        issuer=settings.CLERK_JWT_ISSUER or None,
        leeway=LEEWAY_SECONDS,
        options={"require": ["exp", "sub"], "verify_aud": False},
    )
    audience = settings.CLERK_JWT_AUDIENCE
    if audience:
        allowed = {a.strip() for a in audience.split(",") if a.strip()}
        presented = {value for value in [claims.get("azp"), *_as_list(claims.get("aud"))] if isinstance(value, str)}
        if not allowed & presented:
            raise jwt.InvalidAudienceError("azp/aud is not an allowed audience")
    return claims


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def org_claims(claims: dict[str, Any]) -> tuple[str | None, str | None]:
    """(org id, role) from a v2 token's `o` claim or a v1 token's top-level claims.

    A claim of another type than Clerk's (an `o` that is not an object, an id that is not a string)
    makes the token invalid (`jwt.InvalidTokenError`), even though it is signed."""
    if claims.get("v") == 2 or "o" in claims:
        org = claims.get("o")
        if org is None:
            return None, None
        if not isinstance(org, dict):
            raise jwt.InvalidTokenError("the `o` claim is not an object")
        return _text_claim(org, "id", "o.id"), _text_claim(org, "rol", "o.rol")
    return _text_claim(claims, "org_id"), _text_claim(claims, "org_role")


def org_slug(claims: dict[str, Any]) -> str | None:
    """The organisation's slug (v2 `o.slg`, v1 `org_slug`): the on-the-spot tenant's name until Clerk's
    webhook names it."""
    org = claims.get("o")
    if isinstance(org, dict):
        return _text_claim(org, "slg", "o.slg")
    return _text_claim(claims, "org_slug")


async def session_tenant(org_id: str, slug: str | None, user_id: str, role: str | None) -> tuple[UUID, str]:
    async with session_scope() as session:
        return await tenant_for_session(await raw_connection(session), org_id, slug, user_id, role)


def _text_claim(claims: dict[str, Any], key: str, name: str | None = None) -> str | None:
    """A string claim (or None when absent); Postgres text cannot hold a NUL, so such a value is invalid."""
    value = claims.get(key)
    if value is not None and (not isinstance(value, str) or "\x00" in value):
        raise jwt.InvalidTokenError(f"the `{name or key}` claim is not a string")
    return value


def _token_from(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return connection.cookies.get("__session") or None


class ClerkAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A 401/403 raised here would leave the middleware stack as an exception and be rendered by the
        # app's outermost handler, past the send wrappers of the app-level middleware: no X-Request-ID,
        # logged as 500, counted as 200 by Prometheus (litestar#4747). Render it here, inside them.
        await wrap_in_exception_handler(super().__call__)(scope, receive, send)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        settings = get_settings()
        token = _token_from(connection)
        if token is None:
            raise NotAuthorizedException("A Clerk session token is required (Authorization: Bearer ...)")
        try:
            claims = await verify_session_token(token, settings)
            org_id, role = org_claims(claims)
            user_id = _text_claim(claims, "sub")
            slug = org_slug(claims)
        except (jwt.PyJWTError, httpx.HTTPError) as exc:
            log.info("auth.token_rejected", reason=type(exc).__name__, error=str(exc))
            raise NotAuthorizedException("The session token is invalid or expired") from None
        if not org_id:
            raise PermissionDeniedException("The session has no active organization")
        # An organisation Clerk's webhook has not told us about yet becomes its tenant now (issue #15).
        tenant_id, status = await session_tenant(org_id, slug, str(user_id), role)
        if status == TenantStatus.DEACTIVATED:
            raise PermissionDeniedException("The organization was deleted")
        if status not in SIGNED_IN_STATUSES:
            raise PermissionDeniedException("The organization's NeverMissCall account is inactive")
        structlog.contextvars.bind_contextvars(tenant_id=str(tenant_id))
        principal = Principal(user_id=str(user_id), org_id=org_id, org_role=role, tenant_id=tenant_id)
        return AuthenticationResult(user=principal, auth=claims)
