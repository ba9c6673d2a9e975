"""Dramatiq on a Postgres broker (dramatiq-postgres), so one Postgres stays the only stateful service."""

from __future__ import annotations

import dramatiq
from dramatiq_postgres import PostgresBroker
from dramatiq_postgres.utils import make_pool

from nmc.settings import get_settings

MAINTENANCE_QUEUE = "maintenance"


def setup_broker() -> PostgresBroker:
    """Install the broker once per process (jobs process, and the worker that schedules jobs)."""
    current = dramatiq.get_broker() if _has_broker() else None
    if isinstance(current, PostgresBroker):
        return current
    settings = get_settings()
    # dramatiq-postgres opens up to 16 connections by default: bounded like every other pool here.
    broker = PostgresBroker(pool=make_pool(settings.DATABASE_URL, maxconn=settings.DB_POOL_SIZE), results=False)
    dramatiq.set_broker(broker)
    return broker


def _has_broker() -> bool:
    import dramatiq.broker as broker_module

    return broker_module.global_broker is not None
