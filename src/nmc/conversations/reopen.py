"""Texts of replayed events: which will be sent, and why the others will not (`just replay-outbox`).

A parked text event (`call.missed` for the first SMS, `sms.outbound_requested` for any other text)
whose message `failed` before Twilio accepted it (no SID) for a reason that was not the recipient's
(an unknown 4xx, `PermanentFailure`) is made sendable again here: back to `pending`, its error
cleared, so the replayed event plans and sends it with every guard applied afresh. Anything Twilio
accepted, refused for the recipient's sake, or that we suppressed stays as it is, and the report
says so. The operators' composition root (`nmc/cli.py`) calls this inside `events.replay_parked`'s
transaction (events import no domain module), so a text is reopened exactly when its event is requeued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.conversations.first_sms import first_sms_key
from nmc.db import raw_connection
from nmc.events import CallMissed, DomainEvent, OutboundSmsRequested
from nmc.messaging import RECIPIENT_REFUSALS, MessageStatus

_TEXTS = """
    SELECT id, idempotency_key, kind, status, twilio_sid, error_code, suppressed_reason
    FROM conv_messages WHERE id = ANY($1::uuid[]) OR idempotency_key = ANY($2::text[])
    FOR UPDATE
"""
_REOPEN = """
    UPDATE conv_messages SET status = 'pending', error_code = NULL, send_started_at = NULL, scheduled_for = NULL
    WHERE id = ANY($1::uuid[]) AND status = 'failed' AND twilio_sid IS NULL
"""
# Twilio had the text: nothing is sent again whatever its later delivery status.
_ACCEPTED_STATUSES = frozenset(
    {
        MessageStatus.ACCEPTED,
        MessageStatus.QUEUED,
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.READ,
    }
)


@dataclass(frozen=True)
class TextOutcome:
    event_id: UUID
    message_id: UUID | None
    sendable: bool
    why: str  # what happens to it, or why nothing will


@dataclass
class TextsReplay:
    dry_run: bool
    texts: list[TextOutcome] = field(default_factory=list)

    @property
    def to_send(self) -> list[TextOutcome]:
        return [text for text in self.texts if text.sendable]

    @property
    def skipped(self) -> list[TextOutcome]:
        return [text for text in self.texts if not text.sendable]

    def lines(self) -> list[str]:
        """One line per text of the replayed events, then a summary; nothing when no event had a text."""
        if not self.texts:
            return []
        will = "would be sent" if self.dry_run else "will be sent"
        out = []
        for text in self.texts:
            subject = f"text {text.message_id}" if text.message_id else "text"
            verdict = f"{will}: {text.why}" if text.sendable else f"skipped: {text.why}"
            out.append(f"{subject} of event {text.event_id}: {verdict}")
        reasons: dict[str, int] = {}
        for text in self.skipped:
            kind = text.why.split(" (")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
        why = f" ({', '.join(f'{count} {kind}' for kind, count in reasons.items())})" if reasons else ""
        out.append(f"texts: {len(self.to_send)} {will}, {len(self.skipped)} skipped{why}")
        return out


async def reopen_unsent_texts(session: AsyncSession, events: Sequence[DomainEvent], *, dry_run: bool) -> TextsReplay:
    """For replayed events: reopen their texts that can be sent (unless `dry_run`), and say what
    becomes of each text. Runs in the caller's transaction."""
    report = TextsReplay(dry_run=dry_run)
    by_id = {e.message_id: e for e in events if isinstance(e, OutboundSmsRequested)}
    by_key = {first_sms_key(e.call_id): e for e in events if isinstance(e, CallMissed)}
    if not by_id and not by_key:
        return report
    connection = await raw_connection(session)
    rows = await connection.fetch(_TEXTS, list(by_id), list(by_key))
    found = {row["id"]: row for row in rows} | {row["idempotency_key"]: row for row in rows}
    reopen: list[UUID] = []
    for message_id, outbound in by_id.items():
        report.texts.append(_outcome(outbound.event_id, found.get(message_id), reopen, planned_by_event=False))
    for key, missed in by_key.items():
        report.texts.append(_outcome(missed.event_id, found.get(key), reopen, planned_by_event=True))
    if reopen and not dry_run:
        await connection.execute(_REOPEN, reopen)
    return report


def _outcome(event_id: UUID, row: asyncpg.Record | None, reopen: list[UUID], *, planned_by_event: bool) -> TextOutcome:
    if row is None:
        if planned_by_event:  # the first SMS's row is written when its event is planned
            return TextOutcome(event_id, None, True, "not planned yet")
        return TextOutcome(event_id, None, False, "message gone")
    message_id: UUID = row["id"]
    status, sid, code = row["status"], row["twilio_sid"], row["error_code"]
    if sid is not None or status in _ACCEPTED_STATUSES:
        return TextOutcome(event_id, message_id, False, f"accepted already ({sid or status})")
    if status == MessageStatus.SUPPRESSED:
        return TextOutcome(event_id, message_id, False, f"suppressed ({row['suppressed_reason']})")
    if status == MessageStatus.FAILED and code in RECIPIENT_REFUSALS:
        return TextOutcome(event_id, message_id, False, f"recipient refused (code {code})")
    if status == MessageStatus.FAILED:
        reopen.append(message_id)
        return TextOutcome(event_id, message_id, True, f"reopened (it failed with code {code} before Twilio had it)")
    if status == MessageStatus.SENDING:
        return TextOutcome(event_id, message_id, True, "after a lookup (its last attempt has an unknown outcome)")
    return TextOutcome(event_id, message_id, True, f"it was {status}")
