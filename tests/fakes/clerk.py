"""Fake Clerk: serves a JWKS over loopback HTTP, mints Clerk-shaped session JWTs, and sends Svix-signed
Clerk webhooks (`ClerkWebhooks`, organisation and membership events in Clerk's shapes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from types import TracebackType
from typing import Any, Self

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import RSAAlgorithm

from tests.fakes._asgi import Receive, Response, Scope, Send, ThreadedServer, drain_lifespan, send_json

DEFAULT_ISSUER = "https://clerk.nmc.test"
DEFAULT_AZP = "https://app.nmc.test"
JWKS_PATH = "/.well-known/jwks.json"


def generate_rsa_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(kid: str, key: RSAPrivateKey) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"kty": jwk["kty"], "use": "sig", "kid": kid, "alg": "RS256", "n": jwk["n"], "e": jwk["e"]}


def org_claims(version: int, org_id: str | None, role: str, org_slug: str | None) -> dict[str, Any]:
    """v2 tokens nest the org under ``o`` (role without the ``org:`` prefix); v1 use top-level claims."""
    if version not in (1, 2):
        raise ValueError(f"unsupported Clerk session token version {version}")
    base: dict[str, Any] = {"v": 2} if version == 2 else {}
    if org_id is None:
        return base
    slug = org_slug or org_id.removeprefix("org_").lower()
    if version == 1:
        return {"org_id": org_id, "org_role": role, "org_slug": slug, "org_permissions": []}
    return {**base, "o": {"id": org_id, "rol": role.removeprefix("org:"), "slg": slug}}


class FakeClerk:
    """Publishes ``/.well-known/jwks.json`` on loopback and signs RS256 session tokens.

    Keys are generated at construction, so :meth:`mint` works before :meth:`start`.
    """

    def __init__(
        self, issuer: str = DEFAULT_ISSUER, authorized_party: str = DEFAULT_AZP, host: str = "127.0.0.1"
    ) -> None:
        self._issuer = issuer
        self._authorized_party = authorized_party
        self._host = host
        self._keys: dict[str, RSAPrivateKey] = {}
        self._published: list[str] = []
        self._current_kid = ""
        self._foreign_key: RSAPrivateKey | None = None
        self._server: ThreadedServer | None = None
        self.jwks_requests = 0
        self.rotate(keep_old=False)

    # ------------------------------------------------------------------ properties

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def kid(self) -> str:
        """The kid new tokens are signed with by default."""
        return self._current_kid

    @property
    def published_kids(self) -> list[str]:
        return list(self._published)

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeClerk is not started")
        return self._server.url

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        if self._server is None:
            server = ThreadedServer(self._asgi, host=self._host)
            server.start()
            self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ keys

    def rotate(self, keep_old: bool = True) -> str:
        """Add a new signing key and make it current; old keys stay in the JWKS iff ``keep_old``.

        Unpublished old keys are retained privately, so ``mint(kid=old)`` still signs with them.
        """
        kid = "ins_" + secrets.token_hex(12)
        self._keys[kid] = generate_rsa_key()
        self._published = [*self._published, kid] if keep_old else [kid]
        self._current_kid = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(kid, self._keys[kid]) for kid in self._published]}

    # ------------------------------------------------------------------ tokens

    def mint(
        self,
        sub: str = "user_123",
        org_id: str | None = None,
        version: int = 2,
        role: str = "org:admin",
        iss: str | None = None,
        azp: str | None = None,
        exp_in: int = 60,
        nbf_offset: int = 0,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
        sign_with_foreign_key: bool = False,
        org_slug: str | None = None,
    ) -> str:
        """Mint a Clerk-shaped session token.

        ``azp=None`` uses the fake's authorized party; ``azp=""`` omits the claim. An unknown ``kid``
        is put in the header while signing with the current key; ``sign_with_foreign_key`` keeps
        the header kid but signs with a key that is never published.
        """
        now = int(time.time())
        claims: dict[str, Any] = {
            "azp": self._authorized_party if azp is None else azp,
            "exp": now + exp_in,
            "iat": now,
            "iss": iss or self._issuer,
            "nbf": now + nbf_offset,
            "sid": "sess_" + secrets.token_hex(12),
            "sub": sub,
        }
        if not claims["azp"]:
            del claims["azp"]
        claims.update(org_claims(version, org_id, role, org_slug))
        claims.update(extra or {})
        header_kid = kid or self._current_kid
        key = self._signing_key(header_kid, sign_with_foreign_key)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": header_kid, "typ": "JWT"})

    def _signing_key(self, kid: str, foreign: bool) -> RSAPrivateKey:
        if foreign:
            self._foreign_key = self._foreign_key or generate_rsa_key()
            return self._foreign_key
        return self._keys.get(kid) or self._keys[self._current_kid]

    # ------------------------------------------------------------------ HTTP

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await drain_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == JWKS_PATH:
            self.jwks_requests += 1
            await send_json(send, Response(200, self.jwks()))
            return
        await send_json(send, Response(404, {"errors": [{"code": "resource_not_found"}]}))


# --------------------------------------------------------------------------- webhooks (Svix-signed)

DEFAULT_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"nmc-fake-clerk-webhook-secret-32b").decode()


def clerk_millis(moment: float | None = None) -> int:
    """Clerk's timestamps: milliseconds since the epoch."""
    return int((time.time() if moment is None else moment) * 1000)


def organization_data(
    org_id: str, name: str = "Joe's Plumbing", updated_at: int | None = None, created_at: int | None = None,
    slug: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`data` of `organization.created|updated` as Clerk sends it (the fields we read and a few more)."""
    created = created_at if created_at is not None else clerk_millis()
    return {
        "object": "organization",
        "id": org_id,
        "name": name,
        "slug": slug or org_id.removeprefix("org_").lower(),
        "image_url": "https://img.clerk.com/fake",
        "has_image": False,
        "created_by": "user_creator",
        "created_at": created,
        "updated_at": updated_at if updated_at is not None else created,
        "public_metadata": {},
        "private_metadata": {},
        "max_allowed_memberships": 5,
        "admin_delete_enabled": True,
        "members_count": 1,
    }


def deleted_organization_data(org_id: str) -> dict[str, Any]:
    """`data` of `organization.deleted`: only the id (Clerk's deleted-object shape)."""
    return {"object": "organization", "id": org_id, "deleted": True}


def membership_data(
    membership_id: str, org: dict[str, Any], user_id: str, role: str = "org:admin",
    identifier: str = "owner@example.com", updated_at: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`data` of `organizationMembership.*`: the membership with its organisation and the member."""
    stamp = updated_at if updated_at is not None else clerk_millis()
    return {
        "object": "organization_membership",
        "id": membership_id,
        "role": role,
        "role_name": "Admin" if role.endswith("admin") else "Member",
        "permissions": [],
        "public_metadata": {},
        "private_metadata": {},
        "created_at": stamp,
        "updated_at": stamp,
        "organization": org,
        "public_user_data": {
            "user_id": user_id,
            "identifier": identifier,
            "first_name": "Joe",
            "last_name": "Owner",
            "image_url": "https://img.clerk.com/fake",
            "has_image": False,
        },
    }


def clerk_event(event_type: str, data: dict[str, Any], timestamp: int | None = None) -> dict[str, Any]:
    """The event envelope Clerk posts (with `timestamp` in ms; ``timestamp=-1`` leaves it out, as some
    payloads do: whether every event carries it is unconfirmed)."""
    event: dict[str, Any] = {
        "data": data,
        "object": "event",
        "type": event_type,
        "instance_id": "ins_fake",
        "event_attributes": {"http_request": {"client_ip": "127.0.0.1", "user_agent": "fake"}},
    }
    if timestamp != -1:
        event["timestamp"] = timestamp if timestamp is not None else clerk_millis()
    return event


class ClerkWebhooks:
    """Svix-signed Clerk webhooks, as Svix signs them (`svix-id`, `svix-timestamp`, `svix-signature`:
    ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` with the secret's base64-decoded bytes).

    :meth:`signed` gives body and headers (for an in-process test client); :meth:`deliver` posts to a
    running web (the e2e tests), remembering every message so :meth:`redeliver` can send one again
    with its original id, as Svix retries do.
    """

    def __init__(self, secret: str = DEFAULT_WEBHOOK_SECRET) -> None:
        self.secret = secret
        self.sent: dict[str, bytes] = {}

    def signature(self, msg_id: str, timestamp: int, body: bytes, secret: str | None = None) -> str:
        key = base64.b64decode((secret or self.secret).removeprefix("whsec_"))
        signed = f"{msg_id}.{timestamp}.".encode() + body
        return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()

    def signed(
        self, event: dict[str, Any], *, msg_id: str | None = None, timestamp: int | None = None,
        secret: str | None = None, tamper: bool = False,
    ) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        """``tamper`` signs one body and returns another; ``secret`` signs with another secret."""
        msg_id = msg_id or "msg_" + secrets.token_hex(14)
        body = json.dumps(event, separators=(",", ":")).encode()
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "svix-id": msg_id,
            "svix-timestamp": str(stamp),
            "svix-signature": self.signature(msg_id, stamp, body, secret),
            "content-type": "application/json",
        }
        self.sent[msg_id] = body
        if tamper:
            body = body.replace(b'"object":"event"', b'"object":"event","tampered":true')
        return body, headers

    def deliver(self, url: str, event: dict[str, Any], **options: Any) -> httpx.Response:
        body, headers = self.signed(event, **options)
        return httpx.post(url, content=body, headers=headers, timeout=10)

    def redeliver(self, url: str, msg_id: str) -> httpx.Response:
        """The same message again (same id and body), freshly timestamped and signed, as a Svix retry."""
        body = self.sent[msg_id]
        stamp = int(time.time())
        headers = {
            "svix-id": msg_id,
            "svix-timestamp": str(stamp),
            "svix-signature": self.signature(msg_id, stamp, body),
            "content-type": "application/json",
        }
        return httpx.post(url, content=body, headers=headers, timeout=10)
