"""Calendars' reactions to domain events: a booking confirmed, moved or cancelled is written back to the
resource's calendar by the jobs process. The subscribers only queue that job (a short INSERT on the
broker's pool), so no calendar request ever runs in the worker's dispatch slots; the job reads the
booking as it is then, so a redelivered or out-of-order event changes nothing."""

from __future__ import annotations

from nmc.calendars.queueing import queue_write_back
from nmc.events import BookingCancelled, BookingConfirmed, BookingRescheduled, subscriber


@subscriber(BookingConfirmed)
@subscriber(BookingRescheduled)
@subscriber(BookingCancelled)
async def write_back_booking(event: BookingConfirmed | BookingRescheduled | BookingCancelled) -> None:
    await queue_write_back(event.tenant_id, event.booking_id)
