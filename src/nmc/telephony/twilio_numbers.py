"""Twilio's REST API for numbers and calls (issue #15): AvailablePhoneNumbers (Local), IncomingPhoneNumbers
(buy, fetch, list, update, release), a Messaging Service's PhoneNumbers, and Calls create.

Base URLs come from settings (`TWILIO_API_BASE_URL`, `TWILIO_MESSAGING_API_BASE_URL`), so the fake Twilio
stands in for both hosts in tests. Every request is counted in `provider_requests_total{provider="twilio"}`.
Refusals are `TwilioRefused` (a 4xx with Twilio's `code`); no answer, a timeout or a 5xx is
`TwilioUnavailable`: for a purchase that means the outcome is unknown, and the reconcile finds out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from nmc.observability.providers import Timer, failure_outcome, observe_request, status_outcome
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="telephony")

API_VERSION = "2010-04-01"
TIMEOUT_SECONDS = 15.0
NOT_AVAILABLE = 21422  # the number was sold meanwhile (or never was on sale)
ALREADY_IN_SERVICE = 21710
VOICE_PATH = "/webhooks/twilio/voice"
VOICE_STATUS_PATH = "/webhooks/twilio/voice/status"
SMS_PATH = "/webhooks/twilio/sms"
MAX_PAGES = 50


class TwilioRefused(Exception):
    """Twilio answered 4xx: `status` and Twilio's error `code`."""

    def __init__(self, operation: str, status: int, code: int | None, message: str) -> None:
        super().__init__(f"twilio {operation}: {status} (code {code}): {message}")
        self.operation = operation
        self.status = status
        self.code = code
        self.message = message


class TwilioUnavailable(Exception):
    """No answer, a timeout or a 5xx: whether Twilio acted is unknown."""


@dataclass(frozen=True)
class AvailableNumber:
    phone_number: str
    friendly_name: str
    locality: str | None
    region: str | None
    postal_code: str | None
    iso_country: str
    voice: bool
    sms: bool
    mms: bool


@dataclass(frozen=True)
class WebhookUrls:
    """Where Twilio calls us about a tenant number: the routes under `/webhooks/twilio`."""

    voice_url: str
    status_callback: str
    sms_url: str
    method: str = "POST"

    @classmethod
    def for_settings(cls, settings: Settings) -> WebhookUrls:
        return cls(
            voice_url=settings.public_url(VOICE_PATH),
            status_callback=settings.public_url(VOICE_STATUS_PATH),
            sms_url=settings.public_url(SMS_PATH),
        )

    def form(self) -> dict[str, str]:
        return {
            "VoiceUrl": self.voice_url,
            "VoiceMethod": self.method,
            "StatusCallback": self.status_callback,
            "StatusCallbackMethod": self.method,
            "SmsUrl": self.sms_url,
            "SmsMethod": self.method,
        }


@dataclass(frozen=True)
class IncomingNumber:
    sid: str
    phone_number: str
    friendly_name: str | None
    voice_url: str | None
    voice_method: str | None
    status_callback: str | None
    status_callback_method: str | None
    sms_url: str | None
    sms_method: str | None

    @classmethod
    def from_resource(cls, resource: dict[str, Any]) -> IncomingNumber:
        def text(name: str) -> str | None:
            value = resource.get(name)
            return str(value) if value is not None else None

        return cls(
            sid=str(resource["sid"]),
            phone_number=str(resource["phone_number"]),
            friendly_name=text("friendly_name"),
            voice_url=text("voice_url"),
            voice_method=text("voice_method"),
            status_callback=text("status_callback"),
            status_callback_method=text("status_callback_method"),
            sms_url=text("sms_url"),
            sms_method=text("sms_method"),
        )

    def drift(self, wanted: WebhookUrls) -> dict[str, tuple[str | None, str]]:
        """Each webhook setting that differs from what it should be: name -> (now, wanted)."""
        now = {
            "VoiceUrl": self.voice_url,
            "VoiceMethod": (self.voice_method or "").upper() or None,
            "StatusCallback": self.status_callback,
            "StatusCallbackMethod": (self.status_callback_method or "").upper() or None,
            "SmsUrl": self.sms_url,
            "SmsMethod": (self.sms_method or "").upper() or None,
        }
        return {name: (now[name], value) for name, value in wanted.form().items() if now[name] != value}


def _capability(capabilities: dict[str, Any], name: str) -> bool:
    """AvailablePhoneNumbers spells `SMS`/`MMS`, IncomingPhoneNumbers `sms`/`mms`: read either."""
    return bool(capabilities.get(name) or capabilities.get(name.upper()) or capabilities.get(name.lower()))


class TwilioNumbers:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.api = self.settings.TWILIO_API_BASE_URL
        self.account = f"{self.api}/{API_VERSION}/Accounts/{self.settings.TWILIO_ACCOUNT_SID}"

    async def _request(
        self, operation: str, method: str, url: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        auth = (self.settings.TWILIO_ACCOUNT_SID, self.settings.TWILIO_AUTH_TOKEN)
        started = Timer()
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, auth=auth, trust_env=False) as client:
                response = await client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            observe_request("twilio", operation, failure_outcome(exc), None, started.seconds)
            raise TwilioUnavailable(f"twilio {operation}: {type(exc).__name__}") from exc
        observe_request(
            "twilio", operation, status_outcome(response.status_code), response.status_code, started.seconds
        )
        if response.status_code in ok:
            return response
        code, message = _error(response)
        log.warning("twilio.numbers_refused", operation=operation, http_status=response.status_code, code=code)
        if response.status_code >= 500 or response.status_code == 429:
            raise TwilioUnavailable(f"twilio {operation}: {response.status_code} (code {code})")
        raise TwilioRefused(operation, response.status_code, code, message)

    async def search(
        self, *, area_code: str | None = None, contains: str | None = None, near: str | None = None, limit: int = 20
    ) -> list[AvailableNumber]:
        """Local US numbers that can take both calls and texts."""
        params = {"SmsEnabled": "true", "VoiceEnabled": "true", "PageSize": str(limit)}
        if area_code:
            params["AreaCode"] = area_code
        if contains:
            params["Contains"] = contains
        if near:
            params["NearNumber"] = near
        url = f"{self.account}/AvailablePhoneNumbers/US/Local.json"
        body = (await self._request("numbers_search", "GET", url, params=params)).json()
        found = []
        for item in body.get("available_phone_numbers") or []:
            capabilities = item.get("capabilities") or {}
            number = AvailableNumber(
                phone_number=item["phone_number"],
                friendly_name=item.get("friendly_name") or item["phone_number"],
                locality=item.get("locality"),
                region=item.get("region"),
                postal_code=item.get("postal_code"),
                iso_country=item.get("iso_country") or "US",
                voice=_capability(capabilities, "voice"),
                sms=_capability(capabilities, "sms"),
                mms=_capability(capabilities, "mms"),
            )
            if number.sms and number.voice:
                found.append(number)
        return found

    async def buy(self, phone_number: str, friendly_name: str, hooks: WebhookUrls) -> IncomingNumber:
        data = {"PhoneNumber": phone_number, "FriendlyName": friendly_name, **hooks.form()}
        url = f"{self.account}/IncomingPhoneNumbers.json"
        response = await self._request("numbers_buy", "POST", url, data=data, ok=(200, 201))
        return IncomingNumber.from_resource(response.json())

    async def find(self, *, phone_number: str | None = None, friendly_name: str | None = None) -> list[IncomingNumber]:
        """The account's numbers, filtered by number and/or FriendlyName (every page)."""
        params = {"PageSize": "100"}
        if phone_number:
            params["PhoneNumber"] = phone_number
        if friendly_name:
            params["FriendlyName"] = friendly_name
        url: str | None = f"{self.account}/IncomingPhoneNumbers.json"
        found: list[IncomingNumber] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            body = (await self._request("numbers_list", "GET", url, params=params)).json()
            found.extend(IncomingNumber.from_resource(item) for item in body.get("incoming_phone_numbers") or [])
            next_page = body.get("next_page_uri")
            url, params = (f"{self.api}{next_page}", {}) if next_page else (None, {})
        # Twilio's PhoneNumber filter matches a pattern: keep exact matches only.
        return [n for n in found if (not phone_number or n.phone_number == phone_number)]

    async def fetch(self, sid: str) -> IncomingNumber | None:
        try:
            response = await self._request("numbers_fetch", "GET", f"{self.account}/IncomingPhoneNumbers/{sid}.json")
        except TwilioRefused as exc:
            if exc.status == 404:
                return None
            raise
        return IncomingNumber.from_resource(response.json())

    async def update(
        self, sid: str, *, friendly_name: str | None = None, hooks: WebhookUrls | None = None
    ) -> IncomingNumber:
        data = {**(hooks.form() if hooks else {}), **({"FriendlyName": friendly_name} if friendly_name else {})}
        url = f"{self.account}/IncomingPhoneNumbers/{sid}.json"
        return IncomingNumber.from_resource((await self._request("numbers_update", "POST", url, data=data)).json())

    async def release(self, sid: str) -> bool:
        """Release the number (it leaves our account); False when it was gone already (404)."""
        url = f"{self.account}/IncomingPhoneNumbers/{sid}.json"
        try:
            await self._request("numbers_release", "DELETE", url, ok=(200, 204))
        except TwilioRefused as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def add_to_messaging_service(self, sid: str) -> bool:
        """Join TWILIO_MESSAGING_SERVICE_SID (texts go out with the service); False when it was in already."""
        service = self.settings.TWILIO_MESSAGING_SERVICE_SID
        if not service:
            return False
        url = f"{self.settings.TWILIO_MESSAGING_API_BASE_URL}/v1/Services/{quote(service)}/PhoneNumbers"
        try:
            await self._request("messaging_service_add", "POST", url, data={"PhoneNumberSid": sid}, ok=(200, 201))
        except TwilioRefused as exc:
            if exc.code == ALREADY_IN_SERVICE or exc.status == 409:
                return False
            raise
        return True

    async def create_call(self, to: str, from_: str, twiml: str, status_callback: str | None = None) -> str:
        data = {"To": to, "From": from_, "Twiml": twiml}
        if status_callback:
            data |= {"StatusCallback": status_callback, "StatusCallbackMethod": "POST"}
        response = await self._request("calls_create", "POST", f"{self.account}/Calls.json", data=data, ok=(200, 201))
        return str(response.json()["sid"])


def _error(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if not isinstance(body, dict):
        return None, str(body)[:200]
    code = body.get("code")
    return (code if isinstance(code, int) else None), str(body.get("message") or "")[:200]
