"""The KPI projection's subscribers (the first SMS writes its own two facts, see `projection.py`)."""

from __future__ import annotations

from nmc.events import BookingConfirmed, CallerOptedOut, MessageReceived, subscriber
from nmc.kpis.projection import project

subscriber(MessageReceived)(project)
subscriber(CallerOptedOut)(project)
subscriber(BookingConfirmed)(project)
