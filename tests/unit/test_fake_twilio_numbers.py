"""The fake Twilio's numbers and calls (issue #15) speak Twilio's wire format: checked with the real
twilio SDK (which parses pages, resources and errors as Twilio sends them), plus the Svix signatures
of the fake Clerk's webhooks checked with the real `svix` library."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from svix.webhooks import Webhook, WebhookVerificationError
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.fakes.clerk import ClerkWebhooks, clerk_event, organization_data
from tests.fakes.twilio_api import FakeTwilio

SID = "AC" + "ab" * 16
TOKEN = "secret-token"
SERVICE = "MG" + "cd" * 16


@pytest.fixture(scope="module")
def twilio_server() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture
def sdk(twilio_server: FakeTwilio) -> Client:
    twilio_server.reset()
    client = Client(SID, TOKEN)
    client.api.base_url = twilio_server.base_url
    client.messaging.base_url = twilio_server.base_url
    return client


def test_available_local_numbers_filter_like_twilio(sdk: Client) -> None:
    local = sdk.available_phone_numbers("US").local
    found = local.list(area_code=512, sms_enabled=True, voice_enabled=True)
    assert [n.phone_number for n in found] == [f"+1512555{n:04d}" for n in range(1, 6)]
    assert found[0].capabilities == {"voice": True, "SMS": True, "MMS": True, "fax": False}
    assert {n.phone_number for n in local.list(area_code=415, sms_enabled=True)} == {
        f"+1415555{n:04d}" for n in range(1, 6)
    }  # the voice-only number is left out
    assert [n.phone_number for n in local.list(contains="5550004", area_code=617)] == ["+16175550004"]
    assert local.list(area_code=999) == []


def test_buy_update_list_and_release_an_incoming_number(sdk: Client, twilio_server: FakeTwilio) -> None:
    bought = sdk.incoming_phone_numbers.create(
        phone_number="+15125550001",
        friendly_name="nmc:tenant",
        voice_url="https://x.test/voice",
        sms_url="https://x.test/sms",
    )
    assert bought.sid.startswith("PN") and bought.capabilities["sms"] is True
    assert (bought.voice_url, bought.voice_method, bought.friendly_name) == (
        "https://x.test/voice",
        "POST",
        "nmc:tenant",
    )
    with pytest.raises(TwilioRestException) as sold:
        sdk.incoming_phone_numbers.create(phone_number="+15125550001")
    assert (sold.value.status, sold.value.code) == (400, 21422)

    updated = sdk.incoming_phone_numbers(bought.sid).update(voice_url="https://y.test/voice")
    assert updated.voice_url == "https://y.test/voice"
    assert [n.sid for n in sdk.incoming_phone_numbers.list(friendly_name="nmc:tenant")] == [bought.sid]
    assert [n.sid for n in sdk.incoming_phone_numbers.list(phone_number="+15125550001")] == [bought.sid]
    assert sdk.incoming_phone_numbers.list(friendly_name="nmc:other") == []

    assert sdk.incoming_phone_numbers(bought.sid).delete() is True  # 204
    with pytest.raises(TwilioRestException) as gone:
        sdk.incoming_phone_numbers(bought.sid).fetch()
    assert gone.value.status == 404
    assert [n["sid"] for n in twilio_server.numbers_state()["released"]] == [bought.sid]


def test_a_messaging_service_takes_a_number_once(sdk: Client) -> None:
    bought = sdk.incoming_phone_numbers.create(phone_number="+16175550001")
    numbers = sdk.messaging.v1.services(SERVICE).phone_numbers
    added = numbers.create(phone_number_sid=bought.sid)
    assert (added.sid, added.service_sid, added.phone_number) == (bought.sid, SERVICE, "+16175550001")
    with pytest.raises(TwilioRestException) as again:
        numbers.create(phone_number_sid=bought.sid)
    assert (again.value.status, again.value.code) == (409, 21710)
    assert [n.sid for n in numbers.list()] == [bought.sid]
    assert numbers(bought.sid).delete() is True


def test_calls_come_from_a_number_of_the_account(sdk: Client, twilio_server: FakeTwilio) -> None:
    line = twilio_server.add_existing_number("+15005550006")
    call = sdk.calls.create(to="+15125550001", from_=line["phone_number"], twiml="<Response><Pause/></Response>")
    assert call.sid.startswith("CA") and call.status == "queued" and call.direction == "outbound-api"
    with pytest.raises(TwilioRestException) as stranger:
        sdk.calls.create(to="+15125550001", from_="+19995550000", twiml="<Response/>")
    assert (stranger.value.status, stranger.value.code) == (400, 21212)
    assert [c["sid"] for c in twilio_server.calls()] == [call.sid]


def test_a_scripted_purchase_can_lose_its_answer_after_buying(sdk: Client, twilio_server: FakeTwilio) -> None:
    twilio_server.script_numbers([{"status": 500, "drop_after_create": True}])
    with pytest.raises(TwilioRestException) as lost:
        sdk.incoming_phone_numbers.create(phone_number="+14155550001", friendly_name="nmc:t")
    assert lost.value.status == 500
    assert [n.phone_number for n in sdk.incoming_phone_numbers.list(friendly_name="nmc:t")] == ["+14155550001"]


def test_fake_clerk_webhooks_verify_with_svix() -> None:
    hooks = ClerkWebhooks()
    body, headers = hooks.signed(clerk_event("organization.created", organization_data("org_1")))
    Webhook(hooks.secret).verify(body, headers)
    tampered, headers = hooks.signed(clerk_event("organization.created", organization_data("org_1")), tamper=True)
    with pytest.raises(WebhookVerificationError):
        Webhook(hooks.secret).verify(tampered, headers)
