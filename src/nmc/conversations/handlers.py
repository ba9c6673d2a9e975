"""Conversations' reactions to domain events."""

from __future__ import annotations

from nmc.conversations.first_sms import send_first_sms
from nmc.events.catalog import CallMissed
from nmc.events.subscribers import subscriber

subscriber(CallMissed)(send_first_sms)
