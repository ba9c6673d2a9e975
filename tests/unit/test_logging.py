"""Structured logs: JSON lines with the runbook §5 keys, phone numbers masked, bodies and secrets dropped."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any
from unittest.mock import ANY

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
def logged(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What `configure_logging` wrote to the captured stdout since the last read.

    The previous structlog/stdlib logging set-up is restored afterwards, so later tests do not write
    into this test's (closed) capture stream.
    """
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    clear_context()
    yield lambda: capsys.readouterr().out
    clear_context()
    structlog.configure(**saved_config)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.fixture
def json_logs(logged: Callable[[], str]) -> Callable[[], list[dict[str, Any]]]:
    """A reader of the JSON lines written since the last read."""
    return lambda: [json.loads(line) for line in logged().splitlines() if line.strip()]


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
    configure_logging("INFO", "json")
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
    configure_logging("WARNING", "json")
    log = structlog.get_logger(module="x")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in json_logs()] == ["loud"]


def test_standard_library_logs_are_json_and_masked_too(json_logs: Any) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("pgqueuer.test").warning("lost connection while texting +15551234567")
    [line] = json_logs()
    assert line["level"] == "warning"
    assert line["logger"] == "pgqueuer.test"
    assert line["event"] == "lost connection while texting +1555***4567"


@pytest.mark.parametrize("name", ["uvicorn.error", "dramatiq.WorkerProcess(0)"])
def test_library_records_come_out_as_our_json_lines(json_logs: Any, name: str) -> None:
    configure_logging("INFO", "json")
    use_correlation_id("lib-42")
    try:
        raise RuntimeError("Twilio refused +15557654321")
    except RuntimeError:
        logging.getLogger(name).exception("failed while texting %s", "+15551234567")
    [line] = json_logs()
    assert line["logger"] == name
    assert line["level"] == "error"
    assert line["event"] == "failed while texting +1555***4567"
    assert line["correlation_id"] == "lib-42"  # contextvars reach library lines too
    assert "timestamp" in line
    assert "RuntimeError: Twilio refused +1555***4321" in line["exception"]
    assert "5551234567" not in json.dumps(line)
    assert "5557654321" not in json.dumps(line)


@pytest.fixture
def uvicorn_access() -> Iterator[logging.Logger]:
    """uvicorn's access logger as uvicorn leaves it with its access log on (the fakes' servers turn it off)."""
    access = logging.getLogger("uvicorn.access")
    saved_level, saved_propagate = access.level, access.propagate
    access.setLevel(logging.INFO)
    access.propagate = True
    yield access
    access.setLevel(saved_level)
    access.propagate = saved_propagate


def test_uvicorn_access_records_keep_method_path_status_and_mask_the_query(
    json_logs: Any, uvicorn_access: logging.Logger
) -> None:
    configure_logging("INFO", "json")
    # uvicorn's own call (httptools_impl.py): client, method, path with query, HTTP version, status.
    uvicorn_access.info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/api/threads/+15551234567?token=s3cret&page=2", "1.1", 200
    )
    [line] = json_logs()
    assert line["logger"] == "uvicorn.access"
    assert line["event"] == "http.access"
    assert line["method"] == "GET"
    assert line["path"] == "/api/threads/+1555***4567?token=***&page=***"
    assert line["http_status"] == 200
    assert "s3cret" not in json.dumps(line)


def test_console_format_is_readable_and_masked_too(logged: Callable[[], str]) -> None:
    configure_logging("INFO", "console")
    structlog.get_logger(module="telephony").info("sms.sent", caller="+15551234567", body="secret words")
    logging.getLogger("uvicorn.error").warning("client +15557654321 went away")
    out = logged()
    lines = out.splitlines()
    assert len(lines) == 2, out
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert "sms.sent" in lines[0]
    assert "caller=+1555***4567" in lines[0]
    assert "body=[redacted]" in lines[0]
    assert "[warning" in lines[1]
    assert "client +1555***4321 went away" in lines[1]
    assert "[uvicorn.error]" in lines[1]
    assert "5551234567" not in out
    assert "5557654321" not in out
    assert "secret words" not in out
    assert "\x1b[" not in out  # no colours: the captured stdout is not a terminal


def test_log_format_comes_from_the_settings_by_default(json_logs: Any, settings_env: Any) -> None:
    settings_env(LOG_FORMAT="json")
    configure_logging("INFO")
    logging.getLogger("pgqueuer").info("ready")
    assert json_logs()[0]["event"] == "ready"


def test_loggers_with_handlers_of_their_own_log_through_ours(json_logs: Any) -> None:
    own = logging.getLogger("nmc.test.own_handler")
    own.addHandler(logging.StreamHandler(sys.stderr))
    own.propagate = False
    configure_logging("INFO", "json")
    own.warning("to +15551234567")
    assert json_logs() == [
        {"event": "to +1555***4567", "logger": "nmc.test.own_handler", "level": "warning", "timestamp": ANY}
    ]
    assert own.handlers == []


def test_the_served_app_logs_through_our_handler_not_litestars(json_logs: Any) -> None:
    from nmc.cli import served_app

    served_app()  # Litestar's default logging config runs in its constructor
    [handler] = logging.getLogger().handlers
    assert isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
    logging.getLogger("litestar").warning("litestar says hi")
    [line] = json_logs()
    assert line["logger"] == "litestar"
    assert line["event"] == "litestar says hi"
