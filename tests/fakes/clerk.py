"""Fake Clerk issuer: serves a JWKS over loopback HTTP and mints Clerk-shaped session JWTs."""

from __future__ import annotations

import secrets
import time
from types import TracebackType
from typing import Any, Self

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
