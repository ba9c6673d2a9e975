"""What the sending pipeline knows of phone numbers (`conv_phone_facts`) and whether sending is open
for everyone (`sms_sending_state`)."""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, CheckConstraint, Integer, SmallInteger, String, func, text
from sqlalchemy.orm import Mapped, mapped_column


class PhoneFact(DefaultBase):
    """What we know of a phone number, whoever's caller it is: its line type (landlines cannot get texts).

    From a Twilio 30006 delivery error or a Lookup v2 line-type request; trusted for 180 days.
    """

    __tablename__ = "conv_phone_facts"

    # A text's recipient: a caller's address as Twilio's `From` carried it (up to 255 characters).
    phone: Mapped[str] = mapped_column(String(255), primary_key=True)
    # landline | mobile | fixedVoip | nonFixedVoip | tollFree | ... (Twilio Lookup's types) | unknown
    line_type: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(20))  # lookup | twilio_30006
    checked_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class SendingState(DefaultBase):
    """Whether texts may go to Twilio at all, for every tenant and every worker process: one row (id 1).

    The sending circuit: opened by a refusal of our credentials or account, or by a run of Twilio 5xx
    and timeouts (`circuit.py`); while
    open, one sender at a time probes when `circuit_probe_at` is due, and an accepted probe closes it.
    A missing row reads as closed. Each reason to hold sending gets its own columns here: the
    operator's pause (`just pause-sms`, issue #13) belongs beside the circuit as `paused_at`,
    `paused_by`, `pause_reason`, read by the same scalar subquery of the planning queries.
    """

    __tablename__ = "sms_sending_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    # NULL: closed. Set when a refusal opened it; kept while further refusals arrive.
    circuit_opened_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    circuit_http_status: Mapped[int | None] = mapped_column(Integer, default=None)
    circuit_code: Mapped[int | None] = mapped_column(Integer, default=None)  # Twilio's error code
    circuit_reason: Mapped[str | None] = mapped_column(String(200), default=None)  # Twilio's message, bounded
    # account (Twilio refused our credentials or account) | unavailable (a run of 5xx/timeouts); NULL: closed.
    circuit_cause: Mapped[str | None] = mapped_column(String(20), default=None)
    # When the next probe may go (a probe claimed pushes it on by the probe interval).
    circuit_probe_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # The operator's pause (`just pause-sms`, issue #13; `pause.py`): NULL while sending is not paused.
    paused_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    paused_by: Mapped[str | None] = mapped_column(String(100), default=None)
    pause_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    # Texts a resume suppressed for having waited longer than PAUSE_MAX_AGE_MINUTES (a counter).
    suppressed_after_pause: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # The current run of Twilio 5xx/timeouts across every sender (`note_unavailable`); UNAVAILABLE_RUN of
    # them, each within UNAVAILABLE_GAP of the last, open the circuit with cause `unavailable`.
    unavailable_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    unavailable_last_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # When the circuit last closed: a request started before then does not count towards a new run.
    circuit_closed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
