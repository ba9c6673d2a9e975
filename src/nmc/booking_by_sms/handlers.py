"""Booking by SMS's reactions to domain events."""

from __future__ import annotations

from nmc.booking_by_sms.service import converse, offer_after_expiry
from nmc.events import HoldExpired, MessageReceived, subscriber

subscriber(MessageReceived)(converse)
subscriber(HoldExpired)(offer_after_expiry)
