"""Scheduling: resources, hours, job types, busy blocks, availability, holds, bookings, the hold GC.

What other modules may use is named here (`__all__`); everything else in the package is its own.
Refusals are members of the one family (`nmc.problems`): a missing id is `NotFound`, an unusable
value `InvalidField`, the rest 409 `Conflict`s named here. A caller that answers a refused hold or
booking with fresh times catches `SCHEDULING_REFUSALS`.
"""

from nmc.scheduling.booking import (
    collect_expired_holds,
    create_booking,
    create_hold,
    release_hold,
    search_availability,
)
from nmc.scheduling.controllers import SCHEDULING_CONTROLLERS
from nmc.scheduling.enums import BookingSource, BookingStatus
from nmc.scheduling.errors import SCHEDULING_REFUSALS, HoldExpiredError, SlotTaken
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
    "HoldCreate",
    "HoldExpiredError",
    "HoldRead",
    "JobTypeService",
    "SlotTaken",
    "bookable_job_type",
    "collect_expired_holds",
    "create_booking",
    "create_hold",
    "release_hold",
    "search_availability",
]
