"""Every setting of runbook §3 plus the ones DESIGN.md adds, typed and validated once at start.

A bad value stops the process with one line naming the variable (`SettingsError`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

Environment = Literal["development", "test", "production"]

LOG_FORMATS = ("console", "json")
DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/nmc"
SECRET_NAMES = frozenset(
    {
        "DATABASE_URL",
        "SECRET_KEY",
        "TWILIO_AUTH_TOKEN",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "GOOGLE_CLIENT_SECRET",
        "JOBBER_API_TOKEN",
        "JOBBER_CLIENT_SECRET",
        "METRICS_TOKEN",
        "DRAMATIQ_BROKER_URL",
        "OPS_API_TOKEN",
        "TWILIO_AUTH_TOKEN_PREVIOUS",
        "SECRET_KEY_PREVIOUS",
        "CLERK_WEBHOOK_SECRET",
    }
)
# Settings a production process refuses to start without: the core path, auth, the metrics token.
REQUIRED_IN_PRODUCTION = (
    "DATABASE_URL",
    "SECRET_KEY",
    "PUBLIC_BASE_URL",
    "METRICS_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_MESSAGING_SERVICE_SID",
    "CLERK_JWT_ISSUER",
    "CLERK_JWKS_URL",
)
# Integrations a deployment may not use yet (issue #13: production requires only the settings of the
# integrations that are enabled). One is enabled when any of its settings is set; then all are required.
# (Billing has its own switch, BILLING_ENABLED, below.)
OPTIONAL_INTEGRATIONS = {
    "Google": ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"),
    "Jobber": ("JOBBER_CLIENT_ID", "JOBBER_CLIENT_SECRET"),
}

# With billing on (BILLING_ENABLED, the default in production), a production process needs all of these.
REQUIRED_FOR_BILLING = (
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_PRICE_BASE",
    "BILLING_SUCCESS_URL",
    "BILLING_CANCEL_URL",
    "BILLING_PORTAL_RETURN_URL",
)


class SettingsError(ValueError):
    """An environment variable has a value the service cannot run with."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _positive_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"expected a number above 0, got {value}")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"expected a number above 0, got {value}")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"expected a number of 0 or more, got {value}")
    return value


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"expected a number of 0 or more, got {value}")
    return value


def _optional_bool(raw: str) -> bool | str:
    return _parse_bool(raw) if raw.strip() else ""


def _port(raw: str) -> int:
    value = _positive_int(raw)
    if value > 65535:
        raise ValueError(f"expected a port number up to 65535, got {value}")
    return value


def _graphql_version(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"expected a date like 2025-01-20, got {raw!r}")
    return value


def _http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"expected an http(s) URL, got {raw!r}")
    return value


def _optional_http_url(raw: str) -> str:
    return _http_url(raw) if raw.strip() else ""


def _database_url(raw: str) -> str:
    """Accept Render's `postgres://` and plain `postgresql://` (with or without a driver)."""
    value = raw.strip()
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.split("+")[0] not in {"postgres", "postgresql"}:
        raise ValueError("expected a postgres:// or postgresql:// URL")
    return f"postgresql://{rest}"


BROKER_SCHEMES = frozenset({"postgres", "postgresql", "amqp", "amqps", "redis", "rediss"})


def _broker_url(raw: str) -> str:
    """Empty: the Postgres broker on DATABASE_URL. Otherwise postgres(ql)://, amqp(s):// or redis(s)://."""
    value = raw.strip()
    if not value:
        return ""
    scheme, sep, rest = value.partition("://")
    if not sep or not rest or scheme not in BROKER_SCHEMES:
        raise ValueError("expected a postgres(ql)://, amqp(s):// or redis(s):// URL")
    return value


def _environment(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"development", "test", "production"}:
        raise ValueError(f"expected development, test or production, got {raw!r}")
    return value


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return value


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"expected console or json, got {raw!r}")
    return value


def _text(raw: str) -> str:
    return raw.strip()


def _operator_token(raw: str) -> str:
    token = raw.strip()
    if token and len(token) < 32:
        raise ValueError("at least 32 characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def _setting(default: str, parse: Callable[[str], Any] = _text) -> Any:
    return field(default=parse(default) if default else default, metadata={"parse": parse})


@dataclass(frozen=True)
class Settings:
    # Core
    ENVIRONMENT: str = _setting("development", _environment)
    DATABASE_URL: str = _setting(DEFAULT_DATABASE_URL, _database_url)
    SECRET_KEY: str = _setting("")
    # During a SECRET_KEY rotation only: what it protected (calendar tokens, OAuth states, channel tokens)
    # is still read with it; new values use SECRET_KEY (`just calendars-rotate-tokens` re-encrypts).
    SECRET_KEY_PREVIOUS: str = _setting("")
    PUBLIC_BASE_URL: str = _setting("http://127.0.0.1:8000", _http_url)
    PORT: int = _setting("8000", _port)
    LOG_LEVEL: str = _setting("INFO", _log_level)
    # Empty means "by ENVIRONMENT": json where machines read the lines (production, the test suite),
    # console on a developer's terminal (`load_settings` fills it in).
    LOG_FORMAT: str = _setting("", _log_format)
    # Issue #13: with a token, `/metrics` answers only `Authorization: Bearer <token>` (set in production).
    METRICS_TOKEN: str = _setting("")
    # Issue #13: the operators' REST API (`/api/ops/*`, the kill switch) answers only this bearer token;
    # empty: that API is off (404) and the `just` recipes are the only way. Never a tenant's Clerk token.
    OPS_API_TOKEN: str = _setting("", _operator_token)
    # Twilio
    TWILIO_ACCOUNT_SID: str = _setting("")
    TWILIO_AUTH_TOKEN: str = _setting("")
    # During a token rotation only: webhook signatures made with it are accepted too (docs/oncall.md).
    TWILIO_AUTH_TOKEN_PREVIOUS: str = _setting("")
    TWILIO_MESSAGING_SERVICE_SID: str = _setting("")
    TWILIO_API_BASE_URL: str = _setting("https://api.twilio.com", _http_url)
    TWILIO_LOOKUP_BASE_URL: str = _setting("https://lookups.twilio.com", _http_url)
    # Issue #15: Messaging Services' PhoneNumbers (a bought number joins TWILIO_MESSAGING_SERVICE_SID).
    TWILIO_MESSAGING_API_BASE_URL: str = _setting("https://messaging.twilio.com", _http_url)
    # The caller ID of onboarding's test calls (a number of our own Twilio account; empty: no test calls).
    TWILIO_TEST_CALL_FROM: str = _setting("")
    # Stripe
    STRIPE_SECRET_KEY: str = _setting("")
    STRIPE_WEBHOOK_SECRET: str = _setting("")
    STRIPE_API_BASE_URL: str = _setting("https://api.stripe.com", _http_url)
    # Billing (issue #12). Empty BILLING_ENABLED means "by ENVIRONMENT": on in production (`load_settings`).
    BILLING_ENABLED: bool = _setting("", _optional_bool)
    BILLING_TRIAL_DAYS: int = _setting("14", _positive_int)  # a new tenant's trial, without a card
    BILLING_GRACE_DAYS: int = _setting("7", _non_negative_int)  # texting stays on this long after a failed payment
    STRIPE_PRICE_BASE: str = _setting("")  # the plan's recurring price (price_...)
    STRIPE_PRICE_PLANS: str = _setting("")  # other plan prices a checkout may ask for, comma-separated
    STRIPE_PRICE_TEXTS: str = _setting("")  # the metered price for texts (on the meter below); empty: none
    STRIPE_METER_EVENT_NAME: str = _setting("nmc_text_segments")
    BILLING_SUCCESS_URL: str = _setting("", _optional_http_url)  # after Checkout; empty: PUBLIC_BASE_URL
    BILLING_CANCEL_URL: str = _setting("", _optional_http_url)
    BILLING_PORTAL_RETURN_URL: str = _setting("", _optional_http_url)
    # Google
    GOOGLE_CLIENT_ID: str = _setting("")
    GOOGLE_CLIENT_SECRET: str = _setting("")
    GOOGLE_API_BASE_URL: str = _setting("https://www.googleapis.com", _http_url)
    # OAuth: the consent page (the browser goes there) and the token/revoke endpoints.
    GOOGLE_OAUTH_BASE_URL: str = _setting("https://accounts.google.com", _http_url)
    GOOGLE_TOKEN_BASE_URL: str = _setting("https://oauth2.googleapis.com", _http_url)
    # Where the OAuth callback sends the owner's browser afterwards (`?outcome=…`); empty: a small page of ours.
    GOOGLE_REDIRECT_UI_URL: str = _setting("", _optional_http_url)
    # The live re-check before a hold or booking: past this, the booking goes ahead on the synced state.
    GOOGLE_FREEBUSY_TIMEOUT_SECONDS: float = _setting("1.5", _positive_float)
    # Push channels: the lifetime asked for (Google caps it at 7 days; its answer decides).
    GOOGLE_WATCH_TTL_SECONDS: int = _setting("604800", _positive_int)
    # The window synced from each calendar (recurring events are expanded over it).
    CALENDAR_SYNC_PAST_DAYS: int = _setting("1", _positive_int)
    CALENDAR_SYNC_FUTURE_DAYS: int = _setting("90", _positive_int)
    # Clerk
    CLERK_JWT_ISSUER: str = _setting("")
    CLERK_JWT_AUDIENCE: str = _setting("")
    CLERK_JWKS_URL: str = _setting("", _optional_http_url)
    # The Clerk webhook endpoint's Svix signing secret (`whsec_...`); two, comma-separated, during a
    # rotation. Empty: every Clerk webhook is refused (tenants still appear from session tokens).
    CLERK_WEBHOOK_SECRET: str = _setting("")
    # Jobber (issue #14). The client secret is also the webhooks' HMAC key. JOBBER_API_TOKEN: a business's
    # personal token, turned into a connection by `just calendars-connect-jobber-token` (no OAuth).
    JOBBER_API_TOKEN: str = _setting("")
    JOBBER_API_URL: str = _setting("https://api.getjobber.com/api/graphql", _http_url)
    JOBBER_CLIENT_ID: str = _setting("")
    JOBBER_CLIENT_SECRET: str = _setting("")
    JOBBER_OAUTH_URL: str = _setting("https://api.getjobber.com/api/oauth", _http_url)
    # The GraphQL schema version pinned in every request (versions live 12-18 months: renew it).
    JOBBER_GRAPHQL_VERSION: str = _setting("2025-01-20", _graphql_version)
    # Tuning / feature flags
    HOLD_TTL_MINUTES: int = _setting("15", _positive_int)
    SEARCH_GRANULARITY_MINUTES: int = _setting("15", _positive_int)
    POLL_INTERVAL_GOOGLE_SECONDS: int = _setting("60", _positive_int)
    POLL_INTERVAL_JOBBER_SECONDS: int = _setting("120", _positive_int)
    OUTBOX_BATCH_SIZE: int = _setting("100", _positive_int)
    # One consumer per process: a second only adds a dequeue and three probes per NOTIFY (README "Benchmarks").
    OUTBOX_CONCURRENCY: int = _setting("1", _positive_int)
    # Connections per process (README "Connection budget"): the SQLAlchemy pool of every process and
    # the jobs process's broker pool; the worker's asyncpg pool for the first-SMS path.
    DB_POOL_SIZE: int = _setting("10", _positive_int)
    DB_HOT_POOL_SIZE: int = _setting("10", _positive_int)
    # Issue #13: the database plan's CPUs (Render dashboard -> the database -> Info), exported as `db_cpus`
    # for the DbCpuBusy alert (backends on CPU against CPUs: runbook §6). 0: unknown, the alert stays silent.
    DATABASE_CPUS: float = _setting("0", _non_negative_float)
    # Issue #16: processes per instance (`nmc web` runs uvicorn with this many workers; `nmc worker`
    # supervises this many worker processes), and the connections one instance of a service may open:
    # a start whose processes x pools exceed it is refused (README "Connection budget").
    WEB_CONCURRENCY: int = _setting("1", _positive_int)
    WORKER_PROCESSES: int = _setting("1", _positive_int)
    DB_CONNECTION_BUDGET: int = _setting("90", _positive_int)
    # The jobs process's Dramatiq broker: empty = Postgres (DATABASE_URL, the default); amqp://… (RabbitMQ)
    # or redis://… run the same actors on that broker (README "Processes", ADR 0018).
    DRAMATIQ_BROKER_URL: str = _setting("", _broker_url)
    # Added by DESIGN.md/issues: how long a claimed outbox row is invisible to other dispatchers
    # (also PgQueuer's heartbeat timeout), and how many attempts before a row is parked.
    OUTBOX_LEASE_SECONDS: int = _setting("30", _positive_int)
    OUTBOX_MAX_ATTEMPTS: int = _setting("10", _positive_int)
    # The worker wakes on NOTIFY; polling every WORKER_POLL_SECONDS is the fallback.
    # WORKER_LISTEN=false turns the wake-up off (benchmarks show the fallback alone).
    WORKER_POLL_SECONDS: float = _setting("2", _positive_float)
    WORKER_LISTEN: bool = _setting("true", _parse_bool)
    TREAT_SHORT_COMPLETED_AS_MISSED: bool = _setting("false", _parse_bool)
    SHORT_COMPLETED_MAX_SECONDS: int = _setting("10", _positive_int)
    PAUSE_OUTBOUND_SMS: bool = _setting("false", _parse_bool)
    # Issue #13: on `just resume-sms`, texts that waited as paused longer than this are suppressed, not sent late.
    PAUSE_MAX_AGE_MINUTES: int = _setting("60", _positive_int)
    # A Twilio Lookup (line type) before a caller's first text, cached 180 days: skips landlines up
    # front but adds a round trip to the first-SMS path the first time a number is seen.
    LOOKUP_LINE_TYPE_BEFORE_FIRST_SMS: bool = _setting("false", _parse_bool)

    @property
    def is_production(self) -> bool:
        return self.ENVIRONMENT == "production"

    @property
    def sqlalchemy_url(self) -> str:
        return self.DATABASE_URL.replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def twilio_configured(self) -> bool:
        return bool(self.TWILIO_ACCOUNT_SID and self.TWILIO_AUTH_TOKEN)

    def public_url(self, path: str) -> str:
        return f"{self.PUBLIC_BASE_URL}{path}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise `SettingsError` naming the first bad variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in fields(Settings):
        raw = env.get(spec.name)
        if raw is None:
            continue
        try:
            values[spec.name] = spec.metadata["parse"](raw)
        except ValueError as exc:
            raise SettingsError(f"{spec.name}: {exc}") from None
    settings = Settings(**values)
    if not settings.LOG_FORMAT:
        settings = replace(settings, LOG_FORMAT="console" if settings.ENVIRONMENT == "development" else "json")
    if settings.BILLING_ENABLED == "":
        settings = replace(settings, BILLING_ENABLED=settings.is_production)
    if settings.is_production:
        missing = [name for name in REQUIRED_IN_PRODUCTION if not env.get(name, "").strip()]
        if missing:
            raise SettingsError(f"{missing[0]}: required when ENVIRONMENT=production")
        for integration, names in OPTIONAL_INTEGRATIONS.items():
            given = [name for name in names if env.get(name, "").strip()]
            if given and len(given) < len(names):
                absent = next(name for name in names if name not in given)
                raise SettingsError(
                    f"{absent}: required when ENVIRONMENT=production and {integration} is enabled ({given[0]} is set)"
                )
    if settings.is_production and settings.BILLING_ENABLED:
        missing = [name for name in REQUIRED_FOR_BILLING if not env.get(name, "").strip()]
        if missing:
            raise SettingsError(f"{missing[0]}: required when ENVIRONMENT=production and BILLING_ENABLED is on")
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
