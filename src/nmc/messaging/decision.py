"""The sending decision every text goes through: send now, wait until, or suppress with a reason.

Pure: the facts are read by the caller (the first SMS in one query, every other text in another),
the verdict is recorded by the caller. The ladder, in order:

1. the recipient may not be texted (tenant inactive, opted out, known landline), the tenant is not
   entitled to text (billing: `ENTITLED_SQL`; the owner's billing notices are exempt), or the caller
   got a first SMS within the cooldown → suppress (never kept to go out later);
2. `PAUSE_OUTBOUND_SMS` or the operator's pause (`just pause-sms`) → wait as `paused`, re-checked every
   `PAUSE_RECHECK` (a resume releases them at once);
3. quiet hours in the tenant's zone (owner alerts, help replies and booking texts are exempt) →
   an automated text under the `suppress` policy is suppressed, any other waits as `scheduled`;
4. the sending circuit is open (Twilio refused our credentials, `circuit.py`) → wait as `paused`
   until the next probe, or `Probe` once it is due (the caller claims it with `claim_probe`);
5. otherwise send.

The circuit comes last: a probe is a text that would otherwise go now, never one quiet hours hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

import structlog

from nmc.identity import TenantStatus
from nmc.messaging.quiet_hours import quiet_until
from nmc.messaging.vocabulary import MessageKind, MessageStatus, QuietHoursPolicy, SuppressedReason

log = structlog.get_logger(module="messaging")

PAUSE_RECHECK = timedelta(seconds=15)
PAUSED_REASON = "PAUSE_OUTBOUND_SMS"  # the deferral note the worker releases when it starts unpaused
QUIET_HOURS_REASON = "quiet hours"
# The deferral note of texts held by the sending circuit; a probe that closes it releases them.
CIRCUIT_REASON = "sending circuit open"

# The owner wants to hear about a lead now; a caller who texted HELP or is booking asked for the answer now.
QUIET_HOURS_EXEMPT = frozenset(
    {MessageKind.OWNER_ALERT, MessageKind.HELP, MessageKind.BOOKING, MessageKind.BILLING_NOTICE}
)
# The owner's billing notices say texting is off: the entitlement never holds them back.
ENTITLEMENT_EXEMPT = frozenset({MessageKind.BILLING_NOTICE})
# Texts to the business itself while it sets up (a forwarding number's code, issue #15): an onboarding
# tenant sends them (callers get nothing until it is active), at any hour (the owner is waiting for it).
SETUP_TEXTS = frozenset({MessageKind.FORWARDING_CODE})
# Texts the business did not write by hand: the tenant's `suppress` quiet-hours policy applies.
AUTOMATED = frozenset({MessageKind.FIRST_SMS, MessageKind.FOLLOW_UP})


@dataclass(frozen=True)
class SendFacts:
    kind: MessageKind
    tenant_status: str
    opted_out: bool
    landline: bool
    timezone: str
    quiet_hours: tuple[time | None, time | None]
    quiet_policy: str = QuietHoursPolicy.DELAY
    texted_recently: bool = False  # the first SMS's cooldown
    # While the sending circuit is open: when the next probe may go (`CIRCUIT_SQL`); None: closed.
    circuit_probe_at: datetime | None = None
    # An operator paused sending (`just pause-sms`, `PAUSE_SQL`): every text waits, as with PAUSE_OUTBOUND_SMS.
    operator_paused: bool = False
    # Billing's entitlement (`ENTITLED_SQL`, or BILLING_ENABLED=false): False suppresses as `not_entitled`.
    entitled: bool = True


@dataclass(frozen=True)
class Send:
    probe: bool = False  # this text is the probe of an open circuit: its answer closes it


@dataclass(frozen=True)
class Probe:
    """The circuit is open and a probe is due: send only if `claim_probe` wins it."""


@dataclass(frozen=True)
class Wait:
    status: MessageStatus  # paused | scheduled
    until: datetime
    reason: str  # the deferral note (`PAUSED_REASON`, `QUIET_HOURS_REASON`)

    @property
    def scheduled_for(self) -> datetime | None:
        return self.until if self.status == MessageStatus.SCHEDULED else None


@dataclass(frozen=True)
class Suppress:
    reason: SuppressedReason


Verdict = Send | Wait | Suppress | Probe


def blocked_recipient(tenant_status: str, opted_out: bool, landline: bool) -> SuppressedReason | None:
    """Why no text may go to this recipient now; every text checks it at send time."""
    if tenant_status != TenantStatus.ACTIVE:
        return SuppressedReason.TENANT_INACTIVE
    if opted_out:
        return SuppressedReason.OPTED_OUT
    if landline:
        return SuppressedReason.LANDLINE
    return None


def quiet_hours_end(start: time | None, end: time | None, timezone: str, now: datetime) -> datetime | None:
    """A broken quiet-hours setting fails open: a paying tenant is never silently muted."""
    try:
        return quiet_until(start, end, timezone, now)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("sms.quiet_hours_broken", error=str(exc))
        return None


def decide(facts: SendFacts, *, paused: bool, now: datetime) -> Verdict:
    tenant_status = facts.tenant_status
    if facts.kind in SETUP_TEXTS and tenant_status == TenantStatus.ONBOARDING:
        tenant_status = TenantStatus.ACTIVE
    if reason := blocked_recipient(tenant_status, facts.opted_out, facts.landline):
        return Suppress(reason)
    if not facts.entitled and facts.kind not in ENTITLEMENT_EXEMPT:
        return Suppress(SuppressedReason.NOT_ENTITLED)
    if facts.texted_recently:
        return Suppress(SuppressedReason.COOLDOWN)
    if paused or facts.operator_paused:
        return Wait(MessageStatus.PAUSED, now + PAUSE_RECHECK, PAUSED_REASON)
    if facts.kind not in QUIET_HOURS_EXEMPT and facts.kind not in SETUP_TEXTS:
        until = quiet_hours_end(*facts.quiet_hours, facts.timezone, now)
        if until is not None:
            if facts.kind in AUTOMATED and facts.quiet_policy == QuietHoursPolicy.SUPPRESS:
                return Suppress(SuppressedReason.QUIET_HOURS)
            return Wait(MessageStatus.SCHEDULED, until, QUIET_HOURS_REASON)
    if facts.circuit_probe_at is not None:
        if facts.circuit_probe_at > now:
            return Wait(MessageStatus.PAUSED, facts.circuit_probe_at, CIRCUIT_REASON)
        return Probe()
    return Send()
