"""Scheduling: resources, hours, job types, busy blocks, availability, holds, bookings, the hold GC.

What other modules may use is named here (`__all__`); everything else in the package is its own.
Refusals are members of the one family (`nmc.problems`): a missing id is `NotFound`, an unusable
value `InvalidField`, the rest 409 `Conflict`s named here. A caller that answers a refused hold or
booking with fresh times catches `SCHEDULING_REFUSALS`. Busy time kept in another system (calendar
sync) comes in by source + external id (`upsert_external_busy`, `replace_external_busy`, ...), and a
composition root may register a live busy check that is asked before every hold and booking.
"""

from nmc.scheduling.booking import (
    collect_expired_holds,
    create_booking,
    create_hold,
    get_booking,
    release_hold,
    search_availability,
)
from nmc.scheduling.controllers import SCHEDULING_CONTROLLERS
from nmc.scheduling.enums import BookingSource, BookingStatus, BusyBlockSource
from nmc.scheduling.errors import SCHEDULING_REFUSALS, HoldExpiredError, SlotTaken
from nmc.scheduling.external_busy import (
    ExternalBusy,
    LiveBusy,
    LiveBusyCheck,
    clear_external_busy,
    count_external_busy,
    delete_external_busy,
    register_live_busy_check,
    replace_external_busy,
    resource_names,
    unregister_live_busy_check,
    upsert_external_busy,
)
from nmc.scheduling.schemas import AvailabilityRead, BookingCreate, BookingRead, HoldCreate, HoldRead
from nmc.scheduling.service import JobTypeService, bookable_job_type

__all__ = [
    "SCHEDULING_CONTROLLERS",
    "SCHEDULING_REFUSALS",
    "AvailabilityRead",
    "BookingCreate",
    "BookingRead",
    "BookingSource",
    "BookingStatus",
    "BusyBlockSource",
    "ExternalBusy",
    "HoldCreate",
    "HoldExpiredError",
    "HoldRead",
    "JobTypeService",
    "LiveBusy",
    "LiveBusyCheck",
    "SlotTaken",
    "bookable_job_type",
    "clear_external_busy",
    "collect_expired_holds",
    "count_external_busy",
    "create_booking",
    "create_hold",
    "delete_external_busy",
    "get_booking",
    "register_live_busy_check",
    "release_hold",
    "replace_external_busy",
    "resource_names",
    "search_availability",
    "unregister_live_busy_check",
    "upsert_external_busy",
]
