"""The TwiML we answer voice webhooks with (built with twilio's VoiceResponse)."""

from __future__ import annotations

from functools import lru_cache

from twilio.twiml.voice_response import Dial, VoiceResponse

DIAL_TIMEOUT_SECONDS = 20


def forward_call(forwarding_number: str, action_url: str, timeout: int = DIAL_TIMEOUT_SECONDS) -> str:
    response = VoiceResponse()
    dial = Dial(timeout=timeout, answer_on_bridge=True, action=action_url, method="POST")
    dial.number(forwarding_number)
    response.append(dial)
    return str(response)


@lru_cache(maxsize=4096)
def after_missed_call(business_name: str) -> str:
    response = VoiceResponse()
    response.say(f"Sorry, {business_name} could not take your call. We are texting you right now.")
    response.hangup()
    return str(response)


@lru_cache(maxsize=1)
def end_call() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def not_in_service() -> str:
    response = VoiceResponse()
    response.say("Sorry, this number is not in service. Goodbye.")
    response.hangup()
    return str(response)


def empty() -> str:
    return str(VoiceResponse())
