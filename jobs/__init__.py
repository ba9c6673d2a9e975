"""Dramatiq actors: slow, SDK-bound integration work, run by `dramatiq jobs` (the jobs process)."""

from nmc.queue.dramatiq import setup_broker

broker = setup_broker()

from jobs.retention import purge_expired_rows  # noqa: E402

__all__ = ["broker", "purge_expired_rows"]
