"""Lead KPIs for a range of the tenant's local days, aggregated from the projection."""

from __future__ import annotations

from datetime import date
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import raw_connection
from nmc.kpis.projection import local_day_bounds, totals
from nmc.kpis.schemas import KpiRead
from nmc.problems import InvalidField, check_day

MAX_KPI_DAYS = 366


async def read_kpis(session: AsyncSession, tenant_id: UUID, start: date, end: date) -> KpiRead:
    check_day(start, "start")
    check_day(end, "end")
    if end < start:
        raise InvalidField("end", "ends before start")
    if (end - start).days >= MAX_KPI_DAYS:
        raise InvalidField("end", f"a range holds at most {MAX_KPI_DAYS} days")
    connection = await raw_connection(session)
    timezone = await connection.fetchval("SELECT timezone FROM tenant_profiles WHERE id = $1", tenant_id)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        timezone = "UTC"  # a broken tenant setting still gets its numbers, in UTC days
    since, until = local_day_bounds(start, end, timezone)
    found = await totals(connection, tenant_id, since, until)
    return KpiRead(
        start=start,
        end=end,
        timezone=timezone,
        missed_calls=found.missed_calls,
        texted_back=found.texted_back,
        median_time_to_first_sms_ms=found.median_ms,
        p95_time_to_first_sms_ms=found.p95_ms,
        replies=found.replies,
        reply_rate=round(found.replies / found.texted_back, 4) if found.texted_back else None,
        bookings=found.bookings,
        opt_outs=found.opt_outs,
    )
