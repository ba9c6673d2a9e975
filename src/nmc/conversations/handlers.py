"""Conversations' reactions to domain events.

Several subscribers of one event run in order and all run again if one fails or defers, so each is
idempotent; the KPI projection comes first (cheap, and current even while a text waits).
"""

from __future__ import annotations

from nmc.conversations.booking_by_sms import converse, offer_after_expiry
from nmc.conversations.first_sms import send_first_sms
from nmc.conversations.inbound import react_to_message
from nmc.conversations.kpis import project
from nmc.conversations.outbound import send_outbound
from nmc.conversations.threads import mark_booked
from nmc.events.catalog import (
    BookingConfirmed,
    CallerOptedOut,
    CallMissed,
    HoldExpired,
    MessageReceived,
    OutboundSmsRequested,
)
from nmc.events.subscribers import subscriber

# The first SMS writes its KPI facts (missed call, texted back) in statements it runs anyway: the
# benchmarked path gains no round trip, and `sms.first_sent` needs no dispatch (see kpis.py).
subscriber(CallMissed)(send_first_sms)
subscriber(MessageReceived)(project)
subscriber(MessageReceived)(react_to_message)
subscriber(MessageReceived)(converse)
subscriber(HoldExpired)(offer_after_expiry)
subscriber(CallerOptedOut)(project)
subscriber(OutboundSmsRequested)(send_outbound)
subscriber(BookingConfirmed)(project)
subscriber(BookingConfirmed)(mark_booked)
