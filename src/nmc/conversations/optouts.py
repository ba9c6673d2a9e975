"""Opt-outs per (tenant, phone): STOP-family keywords, Twilio's OptOutType, and 21610 rejections.

`conv_opt_outs` holds who is opted out now (the guards check it at send time, so a later STOP stops a
text that is already queued); START deletes the row. `conv_opt_out_events` keeps every change.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID, uuid4

import asyncpg
import structlog

from nmc.events import CallerOptedIn, CallerOptedOut, publish_on
from nmc.observability.correlation import current_correlation_id

log = structlog.get_logger(module="conversations")


class Keyword(StrEnum):
    """What a caller's whole text asks for, when it is one of the carrier keywords."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


class CallerAction(StrEnum):
    """What a keyword did, as `message.received` carries it (`action`)."""

    OPTED_OUT = "opted_out"
    OPTED_IN = "opted_in"
    HELP = "help"


ACTION_OF = {
    Keyword.OPT_OUT: CallerAction.OPTED_OUT,
    Keyword.OPT_IN: CallerAction.OPTED_IN,
    Keyword.HELP: CallerAction.HELP,
}
# Twilio's default keywords (providers.md): the whole body, any case.
OPT_OUT_KEYWORDS = frozenset({"STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
_OPT_OUT_TYPES = {"STOP": Keyword.OPT_OUT, "START": Keyword.OPT_IN, "HELP": Keyword.HELP}
# Is the phone opted out of the tenant's texts? For every query that must know (`.format` the columns).
OPTED_OUT_SQL = "EXISTS (SELECT 1 FROM conv_opt_outs o WHERE o.tenant_id = {tenant} AND o.phone = {phone})"


def keyword(body: str, opt_out_type: str | None = None) -> Keyword | None:
    """`opt_out`, `opt_in`, `help` or None. Twilio's `OptOutType` (Advanced Opt-Out) wins; otherwise
    the whole body, trimmed, in any case, must be a keyword ("stop please" is a message)."""
    if opt_out_type and (verdict := _OPT_OUT_TYPES.get(opt_out_type.strip().upper())):
        return verdict
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return Keyword.OPT_OUT
    if word in OPT_IN_KEYWORDS:
        return Keyword.OPT_IN
    if word in HELP_KEYWORDS:
        return Keyword.HELP
    return None


_INSERT_OPT_OUT = """
    INSERT INTO conv_opt_outs (id, tenant_id, phone, source) VALUES ($1, $2, $3, $4)
    ON CONFLICT ON CONSTRAINT uq_conv_opt_outs_tenant_phone DO NOTHING
    RETURNING id
"""
_DELETE_OPT_OUT = "DELETE FROM conv_opt_outs WHERE tenant_id = $1 AND phone = $2 RETURNING id"
_AUDIT = """
    INSERT INTO conv_opt_out_events (id, tenant_id, phone, action, source, message_id)
    VALUES ($1, $2, $3, $4, $5, $6)
"""
# The caller's current thread follows: nothing more is sent in it (and no follow-up), until START.
_THREAD_OPTED_OUT = """
    UPDATE conv_threads SET status = 'opted_out', follow_up_due_at = NULL
    WHERE tenant_id = $1 AND caller = $2 AND status IN ('open', 'opted_out')
    RETURNING id
"""
_THREAD_OPTED_IN = """
    UPDATE conv_threads SET status = 'open'
    WHERE tenant_id = $1 AND caller = $2 AND status IN ('open', 'opted_out')
    RETURNING id
"""


async def record_opt_out(
    connection: asyncpg.Connection, tenant_id: UUID, phone: str, source: str, *, message_id: UUID | None = None
) -> bool:
    """Opt the caller out for this tenant (in the caller's transaction). True when it is new."""
    created = await connection.fetchval(_INSERT_OPT_OUT, uuid4(), tenant_id, phone, source)
    await connection.execute(_AUDIT, uuid4(), tenant_id, phone, Keyword.OPT_OUT, source, message_id)
    thread_id: UUID | None = await connection.fetchval(_THREAD_OPTED_OUT, tenant_id, phone)
    if created is None:
        return False
    await publish_on(
        connection,
        CallerOptedOut(
            tenant_id=tenant_id,
            phone=phone,
            source=source,
            thread_id=thread_id,
            correlation_id=current_correlation_id(),
        ),
    )
    log.info("caller.opted_out", phone=phone, source=source, event_name=CallerOptedOut.name)
    return True


async def record_opt_in(
    connection: asyncpg.Connection, tenant_id: UUID, phone: str, source: str, *, message_id: UUID | None = None
) -> bool:
    """Opt the caller back in (START, YES, UNSTOP). True when they were opted out."""
    deleted = await connection.fetchval(_DELETE_OPT_OUT, tenant_id, phone)
    if deleted is None:
        return False
    await connection.execute(_AUDIT, uuid4(), tenant_id, phone, Keyword.OPT_IN, source, message_id)
    thread_id: UUID | None = await connection.fetchval(_THREAD_OPTED_IN, tenant_id, phone)
    await publish_on(
        connection,
        CallerOptedIn(
            tenant_id=tenant_id,
            phone=phone,
            source=source,
            thread_id=thread_id,
            correlation_id=current_correlation_id(),
        ),
    )
    log.info("caller.opted_in", phone=phone, source=source, event_name=CallerOptedIn.name)
    return True
