"""Structured logs: JSON lines with the runbook §5 keys, phone numbers masked, bodies and secrets dropped."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from nmc.observability.correlation import use_correlation_id
from nmc.observability.logging import (
    CONTEXT_KEYS,
    bind_event_context,
    clear_context,
    configure_logging,
    mask_phone,
    mask_text,
    scrub_private_data,
)


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """`configure_logging` writing to the captured stdout; returns a reader of the JSON lines.

    The previous structlog/stdlib logging set-up is restored afterwards, so later tests do not write
    into this test's (closed) capture stream.
    """
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    clear_context()

    def read() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    yield read
    clear_context()
    structlog.configure(**saved_config)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_mask_phone_keeps_country_and_area_prefix_and_last_four() -> None:
    assert mask_phone("+15551234567") == "+1555***4567"
    assert mask_phone("+447911123456") == "+4479***3456"
    assert mask_phone("+1234") == "***"


def test_mask_text_masks_every_number_in_free_text() -> None:
    text = mask_text("missed call from +15551234567 to +15557654321")
    assert text == "missed call from +1555***4567 to +1555***4321"
    assert "1234567" not in text


def test_scrub_masks_phones_redacts_bodies_and_secrets_at_info() -> None:
    event = {
        "event": "sms.sent",
        "caller": "+15551234567",
        "body": "Hi, your booking is at 3pm",
        "Body": "inbound sms text",
        "message_body": "Hello",
        "authorization": "Bearer abc.def.ghi",
        "TWILIO_AUTH_TOKEN": "tw-token",
        "headers": {"Authorization": "Basic xyz", "X-Twilio-Signature": "sig", "From": "+15557654321"},
        "numbers": ["+15550001111", "not a number"],
        "attempts": 3,
    }
    out = scrub_private_data(None, "info", dict(event))
    assert out["caller"] == "+1555***4567"
    assert out["body"] == out["Body"] == out["message_body"] == "[redacted]"
    assert out["authorization"] == "[redacted]"
    assert out["TWILIO_AUTH_TOKEN"] == "[redacted]"
    assert out["headers"]["Authorization"] == "***"
    assert out["headers"]["From"] == "+1555***4321"
    assert out["headers"]["X-Twilio-Signature"] == "sig"
    assert out["numbers"] == ["+1555***1111", "not a number"]
    assert out["attempts"] == 3
    rendered = json.dumps(out)
    for secret in ("abc.def.ghi", "tw-token", "Basic xyz", "booking is at", "5551234567"):
        assert secret not in rendered


def test_scrub_keeps_bodies_at_debug_but_still_masks_phones_and_secrets() -> None:
    out = scrub_private_data(None, "debug", {"body": "call +15551234567", "token": "t0k"})
    assert out["body"] == "call +1555***4567"
    assert out["token"] == "[redacted]"


def test_configure_logging_prints_json_lines_with_the_runbook_keys(json_logs: Any) -> None:
    configure_logging("INFO")
    use_correlation_id("abc-123")
    bind_event_context(event_name="call.missed", tenant_id="6f1c0b7e-0000-0000-0000-000000000001")
    structlog.get_logger(module="telephony").info(
        "http.request", http_status=200, caller="+15551234567", body="secret words"
    )
    [line] = json_logs()
    for key in CONTEXT_KEYS:
        assert key in line, key
    assert line["event"] == "http.request"
    assert line["module"] == "telephony"
    assert line["event_name"] == "call.missed"
    assert line["correlation_id"] == "abc-123"
    assert line["tenant_id"] == "6f1c0b7e-0000-0000-0000-000000000001"
    assert line["http_status"] == 200
    assert line["level"] == "info"
    assert "timestamp" in line
    assert line["caller"] == "+1555***4567"
    assert line["body"] == "[redacted]"


def test_configure_logging_filters_below_the_level(json_logs: Any) -> None:
    configure_logging("WARNING")
    log = structlog.get_logger(module="x")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in json_logs()] == ["loud"]


def test_standard_library_logs_are_json_and_masked_too(json_logs: Any) -> None:
    configure_logging("INFO")
    logging.getLogger("pgqueuer.test").warning("lost connection while texting +15551234567")
    [line] = json_logs()
    assert line["level"] == "warning"
    assert line["logger"] == "pgqueuer.test"
    assert line["event"] == "lost connection while texting +1555***4567"
