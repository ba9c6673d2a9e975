"""The jobs process's Dramatiq broker, one per process, built from `DRAMATIQ_BROKER_URL` (ADR 0018).

Empty (the default): Postgres (dramatiq-postgres) on DATABASE_URL, so one Postgres stays the only
stateful service. `amqp://…`: RabbitMQ (Dramatiq's RabbitmqBroker, publisher confirms on: a send returns
once RabbitMQ has the message). `redis://…`: Redis (RedisBroker). `postgres://…`: the Postgres broker on
that database (its `dramatiq` schema installed there). Every sender (web, worker, jobs, CLI) goes through
`setup_broker`, so all of them use the same one.
"""

from __future__ import annotations

import dramatiq
from dramatiq.broker import Broker

from nmc.settings import Settings, get_settings

MAINTENANCE_QUEUE = "maintenance"

_installed: Broker | None = None


def setup_broker() -> Broker:
    """Install the broker once per process (jobs process, and the web/worker/CLI that hand it work)."""
    global _installed
    if _installed is not None and _has_broker() and dramatiq.get_broker() is _installed:
        return _installed
    _installed = build_broker(get_settings())
    dramatiq.set_broker(_installed)
    return _installed


def broker_kind(url: str) -> str:
    """postgres, rabbitmq or redis, from DRAMATIQ_BROKER_URL's scheme (validated by the settings)."""
    scheme = url.partition("://")[0]
    if scheme in {"amqp", "amqps"}:
        return "rabbitmq"
    if scheme in {"redis", "rediss"}:
        return "redis"
    return "postgres"


def build_broker(settings: Settings) -> Broker:
    url = settings.DRAMATIQ_BROKER_URL
    kind = broker_kind(url)
    if kind == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, confirm_delivery=True)
    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    from dramatiq_postgres import PostgresBroker
    from dramatiq_postgres.utils import make_pool

    database_url = url.replace("postgres://", "postgresql://", 1) if url else settings.DATABASE_URL
    # dramatiq-postgres opens up to 16 connections by default: bounded like every other pool here.
    return PostgresBroker(pool=make_pool(database_url, maxconn=settings.DB_POOL_SIZE), results=False)


def _has_broker() -> bool:
    import dramatiq.broker as broker_module

    return broker_module.global_broker is not None
