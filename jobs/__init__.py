"""Dramatiq actors: slow, SDK-bound integration work, run by `dramatiq jobs` (the jobs process)."""

from nmc.observability.logging import configure_logging
from nmc.queue.dramatiq import setup_broker
from nmc.settings import get_settings

# The jobs process logs like web and worker: JSON lines, phone numbers masked (runbook §5).
configure_logging(get_settings().LOG_LEVEL)
broker = setup_broker()

from jobs.retention import purge_expired_rows  # noqa: E402

__all__ = ["broker", "purge_expired_rows"]
