"""What the KPI REST API answers (msgspec; documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import date

import msgspec


class KpiRead(msgspec.Struct, kw_only=True):
    start: date
    end: date
    timezone: str
    missed_calls: int
    texted_back: int
    median_time_to_first_sms_ms: float | None
    p95_time_to_first_sms_ms: float | None
    # Callers who answered our text (their first message in the thread; not a STOP).
    replies: int
    reply_rate: float | None
    bookings: int
    opt_outs: int
