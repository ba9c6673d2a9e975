"""Delivery statuses from Twilio's status callbacks, including those that arrive before their SID is
recorded (`conv_early_statuses`).

A callback can name a SID no message carries yet: the text's acceptance was not recorded when the
callback came (an unknown outcome whose text the lookup finds later, or a callback faster than our
commit). `update_delivery_status` keeps it; the statements that record a SID (`first_sms._ACCEPTED`,
`outbound._ACCEPTED`) take it in the same statement through `EARLY_STATUS_CTE` (no extra round trip on
the first-SMS path), apply it if it is ahead of Twilio's answer (statuses never move backwards,
`STATUS_RANK`) and return its error code; a 30006 among them then marks the landline with messaging's
`mark_line_type` (a statement more only then: an INSERT CTE on every acceptance cost the benchmarked
statement about 40 µs). Rows nobody claims are deleted by retention after 7 days (`jobs/retention.py`).
"""

from __future__ import annotations

import asyncpg

from nmc.messaging import UNREACHABLE_LANDLINE, LineType, mark_line_type

# Delivery statuses in the order they can follow each other; a late callback never moves back.
STATUS_RANK = {
    "sending": 0, "accepted": 1, "queued": 2, "scheduled": 2, "sent": 3,
    "delivered": 4, "undelivered": 4, "failed": 4, "read": 5,
}  # fmt: skip


def status_rank_sql(status: str) -> str:
    """`STATUS_RANK` of the SQL expression `status` (-1 for any other status)."""
    whens = " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in STATUS_RANK.items())
    return f"(CASE {status} {whens} ELSE -1 END)"


# For a statement recording SID `$3`: `early` takes the status kept for that SID, if any.
EARLY_STATUS_CTE = """early AS (
        DELETE FROM conv_early_statuses WHERE message_sid = $3 RETURNING status, error_code
    )"""
# What such a statement returns: the kept status's error code (for `after_early_status`).
EARLY_ERROR_CODE = "(SELECT e.error_code FROM early e) AS early_error_code"


async def after_early_status(connection: asyncpg.Connection, early_error_code: int | None, phone: str) -> None:
    """A status kept before the SID was recorded said 30006: the recipient is a landline."""
    if early_error_code == UNREACHABLE_LANDLINE:
        await mark_line_type(connection, phone, LineType.LANDLINE, "twilio_30006")


def status_after_early(answered: str) -> str:
    """The message's status once recorded: Twilio's answer `answered`, or the kept status if it is ahead."""
    return (
        f"coalesce((SELECT e.status FROM early e WHERE {status_rank_sql('e.status')} > "
        f"{status_rank_sql(f'{answered}::text')}), {answered})"
    )


ERROR_CODE_AFTER_EARLY = "coalesce((SELECT e.error_code FROM early e), error_code)"
