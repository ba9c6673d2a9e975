"""What calendars keep secret, all under keys derived from `SECRET_KEY` (HKDF-SHA256, one `info` per use):

- provider tokens at rest: Fernet; `MultiFernet` with `SECRET_KEY_PREVIOUS` decrypts during a rotation
  (`just calendars-rotate-tokens` then re-encrypts every stored token under the current key);
- the OAuth `state`: an HMAC-signed, short-lived payload binding tenant, user, resource and calendar;
  single use is the `calendar_oauth_states` row the callback deletes;
- push channel tokens: HMAC of the channel id, so a notification is verified without a lookup and every
  channel has its own token (`X-Goog-Channel-Token`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import UUID

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nmc.settings import Settings, get_settings

TOKENS_INFO = b"nmc calendars: provider tokens at rest v1"
STATE_INFO = b"nmc calendars: oauth state v1"
CHANNEL_INFO = b"nmc calendars: push channel tokens v1"
STATE_TTL_SECONDS = 600


class Undecryptable(ValueError):
    """A stored token no configured key opens (SECRET_KEY changed without SECRET_KEY_PREVIOUS)."""


class BadState(ValueError):
    """An OAuth `state` that is forged, malformed or expired."""


def derive_key(secret: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode())


def _secrets(settings: Settings) -> list[str]:
    """The current key first, then the previous one during a rotation."""
    keys = [settings.SECRET_KEY]
    if settings.SECRET_KEY_PREVIOUS and settings.SECRET_KEY_PREVIOUS != settings.SECRET_KEY:
        keys.append(settings.SECRET_KEY_PREVIOUS)
    return keys


@lru_cache(maxsize=4)
def _fernet(current: str, previous: str) -> MultiFernet:
    keys = [current] + ([previous] if previous and previous != current else [])
    return MultiFernet([Fernet(base64.urlsafe_b64encode(derive_key(key, TOKENS_INFO))) for key in keys])


def _tokens(settings: Settings | None = None) -> MultiFernet:
    settings = settings or get_settings()
    return _fernet(settings.SECRET_KEY, settings.SECRET_KEY_PREVIOUS)


def encrypt(value: str, settings: Settings | None = None) -> str:
    return _tokens(settings).encrypt(value.encode()).decode()


def decrypt(value: str, settings: Settings | None = None) -> str:
    try:
        return _tokens(settings).decrypt(value.encode()).decode()
    except InvalidToken:
        raise Undecryptable("no configured key decrypts this token (see SECRET_KEY_PREVIOUS)") from None


def reencrypt(value: str, settings: Settings | None = None) -> str:
    """The same secret under the current key (a rotation's second step)."""
    try:
        return _tokens(settings).rotate(value.encode()).decode()
    except InvalidToken:
        raise Undecryptable("no configured key decrypts this token (see SECRET_KEY_PREVIOUS)") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, info: bytes, message: bytes) -> bytes:
    return hmac.new(derive_key(secret, info), message, hashlib.sha256).digest()


@dataclass(frozen=True)
class OAuthStateClaims:
    nonce: str
    tenant_id: UUID
    user_id: str
    resource_id: UUID
    provider: str
    calendar_id: str
    expires_at: float  # unix seconds


def sign_state(
    *, tenant_id: UUID, user_id: str, resource_id: UUID, provider: str, calendar_id: str, now: float | None = None
) -> tuple[str, OAuthStateClaims]:
    """A fresh `state` (and what it binds); the caller records its nonce for single use."""
    claims = OAuthStateClaims(
        nonce=secrets.token_urlsafe(24),
        tenant_id=tenant_id,
        user_id=user_id,
        resource_id=resource_id,
        provider=provider,
        calendar_id=calendar_id,
        expires_at=(now or time.time()) + STATE_TTL_SECONDS,
    )
    payload = json.dumps(
        {
            "n": claims.nonce,
            "t": str(tenant_id),
            "u": user_id,
            "r": str(resource_id),
            "p": provider,
            "c": calendar_id,
            "e": int(claims.expires_at),
        },
        separators=(",", ":"),
    ).encode()
    signature = _mac(get_settings().SECRET_KEY, STATE_INFO, payload)
    return f"{_b64(payload)}.{_b64(signature)}", claims


def verify_state(state: str, now: float | None = None) -> OAuthStateClaims:
    """The claims of a `state` we signed and that has not expired; `BadState` otherwise."""
    encoded, _, signature = state.partition(".")
    try:
        payload, presented = _unb64(encoded), _unb64(signature)
    except (ValueError, TypeError):
        raise BadState("malformed state") from None
    if not any(
        hmac.compare_digest(_mac(secret, STATE_INFO, payload), presented) for secret in _secrets(get_settings())
    ):
        raise BadState("state signature does not match")
    try:
        data: dict[str, Any] = json.loads(payload)
        claims = OAuthStateClaims(
            nonce=str(data["n"]),
            tenant_id=UUID(data["t"]),
            user_id=str(data["u"]),
            resource_id=UUID(data["r"]),
            provider=str(data["p"]),
            calendar_id=str(data["c"]),
            expires_at=float(data["e"]),
        )
    except (ValueError, KeyError, TypeError):
        raise BadState("malformed state") from None
    if claims.expires_at < (now or time.time()):
        raise BadState("state expired")
    return claims


def channel_token(channel_id: str, settings: Settings | None = None) -> str:
    """The secret token a push channel is opened with (at most 256 characters: this is 43)."""
    return _b64(_mac((settings or get_settings()).SECRET_KEY, CHANNEL_INFO, channel_id.encode()))


def channel_token_valid(channel_id: str, token: str, settings: Settings | None = None) -> bool:
    """Made by this deployment for this channel (with the current key, or the previous one during a rotation)."""
    presented = token.encode()
    return any(
        hmac.compare_digest(_b64(_mac(secret, CHANNEL_INFO, channel_id.encode())).encode(), presented)
        for secret in _secrets(settings or get_settings())
    )
