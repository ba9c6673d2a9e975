"""Line types of phone numbers (landlines cannot receive texts), shared by every tenant.

A Twilio 30006 delivery error marks a number as a landline; with `LOOKUP_LINE_TYPE_BEFORE_FIRST_SMS`
a Lookup v2 line-type request before a caller's first text does it up front. Either fact is trusted
for `LINE_TYPE_TTL` (numbers get ported), and a landline is never texted while it holds.
"""

from __future__ import annotations

import asyncpg
import structlog

from nmc.db import hot_pool
from nmc.messaging.sms import LookupFailed, get_line_type_lookup

log = structlog.get_logger(module="messaging")

LINE_TYPE_TTL = "180 days"
# Published for the senders' planning queries (one round trip on the first-SMS path): is `{phone}` a
# known landline?
LANDLINE_SQL = (
    "EXISTS (SELECT 1 FROM conv_phone_facts f WHERE f.phone = {phone} AND f.line_type = 'landline'"
    f" AND f.checked_at > now() - interval '{LINE_TYPE_TTL}')"
)

_MARK = """
    INSERT INTO conv_phone_facts (phone, line_type, source, checked_at) VALUES ($1, $2, $3, now())
    ON CONFLICT (phone) DO UPDATE SET line_type = EXCLUDED.line_type, source = EXCLUDED.source, checked_at = now()
"""
_KNOWN = f"SELECT line_type FROM conv_phone_facts WHERE phone = $1 AND checked_at > now() - interval '{LINE_TYPE_TTL}'"


async def mark_line_type(connection: asyncpg.Connection, phone: str, line_type: str, source: str) -> None:
    await connection.execute(_MARK, phone, line_type, source)


async def ensure_line_type(phone: str) -> str | None:
    """The number's line type, from the cache or (once per `LINE_TYPE_TTL`) Twilio Lookup.

    None when it is unknown and cannot be asked (console backend, Lookup down): the text goes out.
    """
    pool = await hot_pool()
    known: str | None = await pool.fetchval(_KNOWN, phone)
    if known is not None:
        return known
    lookup = get_line_type_lookup()
    if lookup is None:
        return None
    try:
        line_type = await lookup.line_type(phone)
    except LookupFailed as exc:
        log.warning("line_type.lookup_failed", phone=phone, error=str(exc))
        return None
    await pool.execute(_MARK, phone, line_type, "lookup")
    log.info("line_type.looked_up", phone=phone, line_type=line_type)
    return line_type
