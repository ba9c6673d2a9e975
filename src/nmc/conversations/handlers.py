"""Conversations' reactions to domain events.

Several subscribers of one event run in order and all run again if one fails or defers, so each is
idempotent. The first SMS writes its KPI facts in statements it runs anyway (see `nmc.kpis`).
"""

from __future__ import annotations

from nmc.conversations.billing_notices import tell_owner_payment_failed, tell_owner_texting_is_off
from nmc.conversations.calendar_notices import tell_owner_calendar_needs_reauth
from nmc.conversations.first_sms import send_first_sms
from nmc.conversations.inbound import react_to_message
from nmc.conversations.outbound import send_outbound
from nmc.conversations.threads import mark_booked
from nmc.events import (
    BillingEntitlementChanged,
    BillingPaymentFailed,
    BookingConfirmed,
    CalendarNeedsReauth,
    CallMissed,
    MessageReceived,
    OutboundSmsRequested,
    subscriber,
)

subscriber(CallMissed)(send_first_sms)
subscriber(MessageReceived)(react_to_message)
subscriber(OutboundSmsRequested)(send_outbound)
subscriber(BookingConfirmed)(mark_booked)
subscriber(CalendarNeedsReauth)(tell_owner_calendar_needs_reauth)
subscriber(BillingEntitlementChanged)(tell_owner_texting_is_off)
subscriber(BillingPaymentFailed)(tell_owner_payment_failed)
