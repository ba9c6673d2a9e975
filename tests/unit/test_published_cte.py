"""`events.published_cte`: an event's outbox row (and the settling of the event being dispatched) as a
CTE of a handler's own statement, bound from the placeholder it is given."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from nmc.events import CallMissed, FirstSmsSent, published_cte, published_values


def test_its_placeholders_start_where_the_statement_says() -> None:
    cte = published_cte("sent", 10)
    assert sorted({int(n) for n in re.findall(r"\$(\d+)", cte)}) == list(range(10, 18))
    assert cte.startswith("sent_settled AS (UPDATE outbox_events SET dispatched_at = now() WHERE id = $17)")


def test_outside_a_dispatch_it_settles_nothing() -> None:
    event = FirstSmsSent(
        tenant_id=uuid4(), call_id=uuid4(), message_id=uuid4(), latency_ms=5.0, correlation_id="c", causation_id="e"
    )
    values = published_values(event)
    assert len(values) == 8 and values[0] == event.event_id and values[-1] is None


def test_an_event_that_needs_a_job_is_refused() -> None:
    event = CallMissed(
        tenant_id=uuid4(), call_id=uuid4(), call_sid="CA" + "0" * 32, caller="+15550001111",
        tenant_number="+15550002222", dial_status="no-answer", webhook_received_at=datetime.now(UTC),
        correlation_id="c",
    )  # fmt: skip
    with pytest.raises(ValueError, match="wakes the worker"):
        published_values(event)
