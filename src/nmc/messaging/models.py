"""What the sending pipeline knows of phone numbers, whoever's caller they are (`conv_phone_facts`)."""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column


class PhoneFact(DefaultBase):
    """What we know of a phone number, whoever's caller it is: its line type (landlines cannot get texts).

    From a Twilio 30006 delivery error or a Lookup v2 line-type request; trusted for 180 days.
    """

    __tablename__ = "conv_phone_facts"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    # landline | mobile | fixedVoip | nonFixedVoip | tollFree | ... (Twilio Lookup's types) | unknown
    line_type: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(20))  # lookup | twilio_30006
    checked_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
