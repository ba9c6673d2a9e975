"""Settings: every runbook §3 variable, its default, and one clear line when a value is bad."""

from __future__ import annotations

import os

import pytest

from nmc.settings import Settings, SettingsError, load_settings
from tests.conftest import run_nmc

# Runbook §3 "Tuning / Feature Flags", exactly as on-call types them, with the runbook's defaults.
RUNBOOK_TUNING_DEFAULTS = {
    "HOLD_TTL_MINUTES": 15,
    "SEARCH_GRANULARITY_MINUTES": 15,
    "POLL_INTERVAL_GOOGLE_SECONDS": 60,
    "POLL_INTERVAL_JOBBER_SECONDS": 120,
    "OUTBOX_BATCH_SIZE": 100,
    "OUTBOX_CONCURRENCY": 1,
    "TREAT_SHORT_COMPLETED_AS_MISSED": False,
    "SHORT_COMPLETED_MAX_SECONDS": 10,
    "PAUSE_OUTBOUND_SMS": False,
}
# Runbook §3 secrets and provider credentials: present, empty unless configured.
RUNBOOK_SECRETS = (
    "SECRET_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_MESSAGING_SERVICE_SID",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "CLERK_JWT_ISSUER",
    "CLERK_JWT_AUDIENCE",
    "CLERK_JWKS_URL",
    "JOBBER_API_TOKEN",
)
# DESIGN.md: provider endpoints are configurable and default to the real hosts.
OTHER_DEFAULTS = {
    "DATABASE_URL": "postgresql://127.0.0.1:5432/nmc",
    "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
    "TWILIO_API_BASE_URL": "https://api.twilio.com",
    "STRIPE_API_BASE_URL": "https://api.stripe.com",
    "GOOGLE_API_BASE_URL": "https://www.googleapis.com",
    "JOBBER_API_URL": "https://api.getjobber.com/api/graphql",
    "LOG_LEVEL": "INFO",
    "PORT": 8000,
}
# What a production process cannot start without (core path and auth).
PRODUCTION_ENV = {
    "ENVIRONMENT": "production",
    "DATABASE_URL": "postgres://u:p@db.internal:5432/nmc",
    "SECRET_KEY": "s3cret",
    "PUBLIC_BASE_URL": "https://nmc.example.com",
    "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "TWILIO_AUTH_TOKEN": "twilio-token",
    "TWILIO_MESSAGING_SERVICE_SID": "MG" + "2" * 32,
    "METRICS_TOKEN": "scrape-token",
    "CLERK_JWT_ISSUER": "https://clerk.example.com",
    "CLERK_JWKS_URL": "https://clerk.example.com/.well-known/jwks.json",
    # Billing is on by default in production and then needs Stripe (tested below): off here.
    "BILLING_ENABLED": "false",
}
# What billing needs in production (issue #12).
BILLING_ENV = {
    "STRIPE_SECRET_KEY": "sk_live_x",
    "STRIPE_WEBHOOK_SECRET": "whsec_x",
    "STRIPE_PRICE_BASE": "price_plan",
    "BILLING_SUCCESS_URL": "https://app.example.com/billing/done",
    "BILLING_CANCEL_URL": "https://app.example.com/billing",
    "BILLING_PORTAL_RETURN_URL": "https://app.example.com/billing",
}


def test_runbook_tuning_variables_have_the_runbook_defaults() -> None:
    settings = load_settings({})
    for name, default in RUNBOOK_TUNING_DEFAULTS.items():
        assert getattr(settings, name) == default, name
        assert type(getattr(settings, name)) is type(default), name


def test_secrets_and_endpoints_exist_with_their_defaults() -> None:
    settings = load_settings({})
    for name in RUNBOOK_SECRETS:
        assert getattr(settings, name) == "", name
    for name, default in OTHER_DEFAULTS.items():
        assert getattr(settings, name) == default, name


def test_every_setting_is_read_from_its_own_env_var() -> None:
    env = {
        "HOLD_TTL_MINUTES": "20",
        "SEARCH_GRANULARITY_MINUTES": "30",
        "POLL_INTERVAL_GOOGLE_SECONDS": "61",
        "POLL_INTERVAL_JOBBER_SECONDS": "121",
        "OUTBOX_BATCH_SIZE": "50",
        "OUTBOX_CONCURRENCY": "4",
        "TREAT_SHORT_COMPLETED_AS_MISSED": "true",
        "SHORT_COMPLETED_MAX_SECONDS": "7",
        "PAUSE_OUTBOUND_SMS": "yes",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9001/",
        "STRIPE_API_BASE_URL": "http://127.0.0.1:9002",
        "GOOGLE_API_BASE_URL": "http://127.0.0.1:9003",
        "JOBBER_API_URL": "http://127.0.0.1:9004/api/graphql",
        "LOG_LEVEL": "debug",
        "PORT": "9999",
        **{name: f"value-of-{name}" for name in RUNBOOK_SECRETS if name != "CLERK_JWKS_URL"},
        "CLERK_JWKS_URL": "https://clerk.example.com/jwks",
    }
    settings = load_settings(env)
    assert settings.HOLD_TTL_MINUTES == 20
    assert settings.SEARCH_GRANULARITY_MINUTES == 30
    assert settings.POLL_INTERVAL_GOOGLE_SECONDS == 61
    assert settings.POLL_INTERVAL_JOBBER_SECONDS == 121
    assert settings.OUTBOX_BATCH_SIZE == 50
    assert settings.OUTBOX_CONCURRENCY == 4
    assert settings.TREAT_SHORT_COMPLETED_AS_MISSED is True
    assert settings.SHORT_COMPLETED_MAX_SECONDS == 7
    assert settings.PAUSE_OUTBOUND_SMS is True
    assert settings.TWILIO_API_BASE_URL == "http://127.0.0.1:9001"  # trailing slash dropped
    assert settings.STRIPE_API_BASE_URL == "http://127.0.0.1:9002"
    assert settings.GOOGLE_API_BASE_URL == "http://127.0.0.1:9003"
    assert settings.JOBBER_API_URL == "http://127.0.0.1:9004/api/graphql"
    assert settings.LOG_LEVEL == "DEBUG"
    assert settings.PORT == 9999
    for name in RUNBOOK_SECRETS:
        assert getattr(settings, name) == env[name], name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOLD_TTL_MINUTES", "abc"),
        ("HOLD_TTL_MINUTES", "0"),
        ("SEARCH_GRANULARITY_MINUTES", "-5"),
        ("OUTBOX_BATCH_SIZE", "1.5"),
        ("OUTBOX_CONCURRENCY", ""),
        ("PAUSE_OUTBOUND_SMS", "maybe"),
        ("TREAT_SHORT_COMPLETED_AS_MISSED", "2"),
        ("PORT", "70000"),
        ("LOG_LEVEL", "LOUD"),
        ("TWILIO_API_BASE_URL", "api.twilio.com"),
        ("PUBLIC_BASE_URL", "ftp://example.com"),
        ("ENVIRONMENT", "staging-ish"),
        ("LOG_FORMAT", "xml"),
        ("LOG_FORMAT", ""),
    ],
)
def test_a_bad_value_raises_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({name: value})
    assert str(raised.value).startswith(f"{name}:"), str(raised.value)
    assert "\n" not in str(raised.value)


def test_log_format_is_console_on_a_developer_terminal_and_json_where_machines_read() -> None:
    assert load_settings({}).LOG_FORMAT == "console"
    assert load_settings({"ENVIRONMENT": "test"}).LOG_FORMAT == "json"  # the suite parses the lines
    assert load_settings(PRODUCTION_ENV).LOG_FORMAT == "json"


def test_log_format_set_explicitly_wins() -> None:
    assert load_settings({**PRODUCTION_ENV, "LOG_FORMAT": "console"}).LOG_FORMAT == "console"
    assert load_settings({"LOG_FORMAT": " JSON "}).LOG_FORMAT == "json"


def test_hold_ttl_abc_message_says_what_was_wrong() -> None:
    with pytest.raises(SettingsError, match=r"^HOLD_TTL_MINUTES: .*'abc'"):
        load_settings({"HOLD_TTL_MINUTES": "abc"})


@pytest.mark.parametrize(
    "missing",
    [
        "DATABASE_URL",
        "SECRET_KEY",
        "PUBLIC_BASE_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_MESSAGING_SERVICE_SID",
        "CLERK_JWKS_URL",
        "METRICS_TOKEN",
    ],
)
def test_production_without_a_required_secret_refuses_naming_it(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    assert str(raised.value).startswith(f"{missing}:"), str(raised.value)


def test_production_with_a_blank_secret_refuses_too() -> None:
    with pytest.raises(SettingsError, match=r"^SECRET_KEY:"):
        load_settings({**PRODUCTION_ENV, "SECRET_KEY": "   "})


def test_production_with_everything_required_starts() -> None:
    settings = load_settings(PRODUCTION_ENV)
    assert settings.is_production
    assert settings.SECRET_KEY == "s3cret"


def test_production_requires_only_the_integrations_that_are_enabled() -> None:
    """Calendars off: no Google settings needed. One of the pair set: the other is required."""
    base = {**PRODUCTION_ENV, "BILLING_ENABLED": "false"}  # billing has its own switch
    assert load_settings(base).GOOGLE_CLIENT_ID == ""
    google = {"GOOGLE_CLIENT_ID": "id", "GOOGLE_CLIENT_SECRET": "secret"}
    assert load_settings({**base, **google}).GOOGLE_CLIENT_SECRET == "secret"
    with pytest.raises(SettingsError, match=r"^GOOGLE_CLIENT_ID: .*Google is enabled \(GOOGLE_CLIENT_SECRET is set\)"):
        load_settings({**base, "GOOGLE_CLIENT_SECRET": "g"})
    assert load_settings({"GOOGLE_CLIENT_SECRET": "g"}).GOOGLE_CLIENT_ID == ""  # development: anything goes


def test_development_starts_with_nothing_configured() -> None:
    settings = load_settings({})
    assert settings.ENVIRONMENT == "development"
    assert not settings.is_production
    assert not settings.twilio_configured


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://u:p@host:5432/db", "postgresql://u:p@host:5432/db"),
        ("postgresql://u:p@host:5432/db", "postgresql://u:p@host:5432/db"),
        ("postgresql+asyncpg://host/db", "postgresql://host/db"),
    ],
)
def test_postgres_urls_are_accepted_and_normalised(raw: str, expected: str) -> None:
    settings = load_settings({"DATABASE_URL": raw})
    url = settings.DATABASE_URL
    assert url == expected
    assert settings.sqlalchemy_url == expected.replace("postgresql://", "postgresql+asyncpg://")


@pytest.mark.parametrize("raw", ["mysql://u:p@host/db", "sqlite:///x.db", "host:5432/db"])
def test_non_postgres_database_urls_are_rejected(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"^DATABASE_URL:"):
        load_settings({"DATABASE_URL": raw})


def test_settings_are_immutable() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.HOLD_TTL_MINUTES = 1  # type: ignore[misc]
    assert isinstance(settings, Settings)


def test_cli_with_a_bad_setting_exits_with_one_line_naming_it() -> None:
    result = run_nmc("tenants", "list", env={"HOLD_TTL_MINUTES": "abc"}, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "HOLD_TTL_MINUTES" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert os.environ.get("HOLD_TTL_MINUTES") is None  # the parent process was not touched


def test_cli_with_an_unknown_log_format_refuses_naming_it() -> None:
    result = run_nmc("tenants", "list", env={"LOG_FORMAT": "xml"}, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "nmc: invalid setting LOG_FORMAT: expected console or json, got 'xml'"
    assert result.stdout == ""


def test_billing_is_on_by_default_in_production_only() -> None:
    assert load_settings({}).BILLING_ENABLED is False
    assert load_settings({"ENVIRONMENT": "test"}).BILLING_ENABLED is False
    assert load_settings({"BILLING_ENABLED": "true"}).BILLING_ENABLED is True
    production = {k: v for k, v in PRODUCTION_ENV.items() if k != "BILLING_ENABLED"}
    assert load_settings({**production, **BILLING_ENV}).BILLING_ENABLED is True
    settings = load_settings({**production, **BILLING_ENV})
    assert (settings.BILLING_TRIAL_DAYS, settings.BILLING_GRACE_DAYS) == (14, 7)
    assert settings.STRIPE_METER_EVENT_NAME == "nmc_text_segments"


@pytest.mark.parametrize("missing", sorted(BILLING_ENV))
def test_production_with_billing_on_requires_each_stripe_setting(missing: str) -> None:
    production = {k: v for k, v in PRODUCTION_ENV.items() if k != "BILLING_ENABLED"}
    env = {**production, **{k: v for k, v in BILLING_ENV.items() if k != missing}}
    with pytest.raises(SettingsError, match=rf"^{missing}: required"):
        load_settings(env)


def test_production_with_billing_off_needs_no_stripe_settings() -> None:
    assert load_settings(PRODUCTION_ENV).BILLING_ENABLED is False


@pytest.mark.parametrize(
    ("name", "raw"), [("BILLING_GRACE_DAYS", "-1"), ("BILLING_TRIAL_DAYS", "0"), ("BILLING_ENABLED", "maybe")]
)
def test_bad_billing_values_are_refused_naming_them(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}:"):
        load_settings({name: raw})
    assert load_settings({"BILLING_GRACE_DAYS": "0"}).BILLING_GRACE_DAYS == 0
