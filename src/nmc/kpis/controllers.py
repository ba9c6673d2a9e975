"""`GET /api/kpis`, scoped by the caller's tenant."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.identity import Principal
from nmc.kpis.schemas import KpiRead
from nmc.kpis.service import read_kpis


class KpiController(Controller):
    path = "/kpis"
    tags = ["KPIs"]

    @get(
        summary="Lead KPIs for a range of days",
        description="Days in the tenant's time zone, both ends included. From the KPI projection of the "
        "domain events: missed calls, texted back, median and P95 time to first SMS, replies and reply "
        "rate, bookings, opt-outs.",
    )
    async def read_kpis(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        start: Annotated[date, QueryParameter(description="First day, YYYY-MM-DD")],
        end: Annotated[date, QueryParameter(description="Last day (included), YYYY-MM-DD")],
    ) -> KpiRead:
        return await read_kpis(db_session, request.user.tenant_id, start, end)
