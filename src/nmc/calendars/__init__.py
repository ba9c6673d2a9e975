"""Calendars: connections to the owners' calendars (OAuth, tokens encrypted at rest), busy time synced in
(full and incremental, push first and polling as the fallback), bookings written back, and the live
re-check before a hold or booking. Google and Jobber (ADR 0016) are the providers; every provider has
one shape (`CalendarProvider`).

Busy time reaches scheduling only through scheduling's face (by source + external id); scheduling asks
the live check through a registration point the composition roots wire at start
(`register_live_busy_check(live_calendar_check)`). Sync, channels and write-back run in the jobs process
(`jobs/calendars.py`); the worker's cron only ticks (`queue_poll_tick`).
"""

from nmc.calendars import metrics as _calendar_figures_probe  # noqa: F401  (registers the /metrics probe)
from nmc.calendars.controllers import (
    CalendarController,
    GoogleCalendarWebhooks,
    JobberWebhooks,
    OAuthCallback,
)
from nmc.calendars.live import live_calendar_check
from nmc.calendars.models import ConnectionStatus, Provider
from nmc.calendars.onboarding import calendar_connected
from nmc.calendars.provider import CalendarProvider
from nmc.calendars.queueing import (
    CALENDAR_QUEUE,
    ITEM_ACTOR,
    POLL_ACTOR,
    SYNC_ACTOR,
    WATCH_ACTOR,
    WRITE_BACK_ACTOR,
    queue_poll_tick,
    queue_sync,
)
from nmc.calendars.service import connect_jobber_token, redirect_uri
from nmc.calendars.sync import SyncReport, poll_tick, run_item, run_sync, run_watch
from nmc.calendars.tools import rotate_tokens, sync_now
from nmc.calendars.webhooks import GOOGLE_WEBHOOKS, JOBBER_WEBHOOKS
from nmc.calendars.writeback import write_back

CALENDAR_CONTROLLERS = [CalendarController]
CALENDAR_ROUTES = [OAuthCallback, GoogleCalendarWebhooks, JobberWebhooks]

__all__ = [
    "CALENDAR_CONTROLLERS",
    "CALENDAR_QUEUE",
    "CALENDAR_ROUTES",
    "GOOGLE_WEBHOOKS",
    "ITEM_ACTOR",
    "JOBBER_WEBHOOKS",
    "POLL_ACTOR",
    "SYNC_ACTOR",
    "WATCH_ACTOR",
    "WRITE_BACK_ACTOR",
    "CalendarProvider",
    "ConnectionStatus",
    "Provider",
    "SyncReport",
    "calendar_connected",
    "connect_jobber_token",
    "live_calendar_check",
    "poll_tick",
    "queue_poll_tick",
    "queue_sync",
    "redirect_uri",
    "rotate_tokens",
    "run_item",
    "run_sync",
    "run_watch",
    "sync_now",
    "write_back",
]
