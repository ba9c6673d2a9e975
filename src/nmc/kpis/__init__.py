"""Lead KPIs: a projection of domain events (`conv_kpi_facts`), its rebuild, and `GET /api/kpis`."""

from nmc.kpis.controllers import KpiController
from nmc.kpis.projection import Metric, RebuildReport, fact_cte, rebuild

__all__ = ["KpiController", "Metric", "RebuildReport", "fact_cte", "rebuild"]
