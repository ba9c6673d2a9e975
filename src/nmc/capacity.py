"""Connections per process and the per-instance budget (README "Connection budget", ADR 0018).

Every pool is fixed in size, so what a process may open is known before it starts: a start whose
processes x pools exceed `DB_CONNECTION_BUDGET` is refused, naming the variables to change, instead of
failing later with "too many clients" under load.
"""

from __future__ import annotations

from nmc.settings import Settings, SettingsError

# A connection of its own each: the metrics flusher (nmc.observability.flusher); the worker's heartbeat.
FLUSHER = 1
HEARTBEAT = 1


def broker_connections(settings: Settings) -> int:
    """The Postgres broker's pool (opened on demand when work is handed to the jobs process); none when
    DRAMATIQ_BROKER_URL names RabbitMQ or Redis."""
    url = settings.DRAMATIQ_BROKER_URL
    return settings.DB_POOL_SIZE if not url or url.startswith("postgres") else 0


def web_process_connections(settings: Settings) -> int:
    """The API's SQLAlchemy pool, and the hot pool the Twilio webhooks run on (ADR 0020)."""
    return settings.DB_POOL_SIZE + settings.DB_HOT_POOL_SIZE + broker_connections(settings) + FLUSHER


def worker_process_connections(settings: Settings) -> int:
    return (
        settings.DB_POOL_SIZE
        + settings.DB_HOT_POOL_SIZE
        + settings.OUTBOX_CONCURRENCY
        + HEARTBEAT
        + FLUSHER
        + broker_connections(settings)
    )


def jobs_process_connections(settings: Settings) -> int:
    return settings.DB_POOL_SIZE + broker_connections(settings) + HEARTBEAT + FLUSHER


def check_connection_budget(service: str, settings: Settings) -> int:
    """Refuse a start of `service` (web or worker) whose processes could open more than the budget;
    returns the connections it may open."""
    if service == "web":
        processes, count, per = "WEB_CONCURRENCY", settings.WEB_CONCURRENCY, web_process_connections(settings)
        pools = "DB_POOL_SIZE + DB_HOT_POOL_SIZE (+ DB_POOL_SIZE for the Postgres broker) + 1"
    else:
        processes, count, per = "WORKER_PROCESSES", settings.WORKER_PROCESSES, worker_process_connections(settings)
        pools = "DB_POOL_SIZE + DB_HOT_POOL_SIZE + OUTBOX_CONCURRENCY (+ DB_POOL_SIZE for the Postgres broker) + 2"
    total = count * per
    if total > settings.DB_CONNECTION_BUDGET:
        raise SettingsError(
            f"DB_CONNECTION_BUDGET: {processes}={count} x {per} connections per {service} process "
            f"({pools}) = {total}, above DB_CONNECTION_BUDGET={settings.DB_CONNECTION_BUDGET}; "
            f"lower {processes} or DB_POOL_SIZE/DB_HOT_POOL_SIZE, or raise DB_CONNECTION_BUDGET "
            'if the database allows it (README "Connection budget")'
        )
    return total
