"""SMS and email providers: the exact request shapes of Twilio and SendGrid, and the outbox.

Twilio and SendGrid are the only things faked here, at the HTTP edge: an `httpx.MockTransport`
records each request and answers as the provider documents (201 with a message resource, 202
with an empty body, or an error). The outbox provider writes to the real PostgreSQL.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import httpx
import pytest

from auth.errors import MessageDeliveryError
from auth.messaging import Messenger, OutboxProvider, SendGridEmail, TwilioSms
from auth.models import OutboundMessage
from kit.db import Database


def _recorder(status: int, body: bytes = b"") -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    return seen, httpx.MockTransport(handle)


class TestTwilio:
    async def test_request_shape(self) -> None:
        """A form POST to Messages.json with To, From, Body and HTTP Basic account credentials."""
        seen, transport = _recorder(201, b'{"sid": "SM123", "status": "queued"}')
        async with httpx.AsyncClient(transport=transport) as http:
            sms = TwilioSms(http, account_sid="AC123", auth_token="tok", from_number="+15005550006")
            await sms.send_sms(to="+14155550123", body="Your code is 123456")
        (request,) = seen
        assert request.method == "POST"
        assert str(request.url) == "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert parse_qs(request.content.decode()) == {
            "To": ["+14155550123"],
            "From": ["+15005550006"],
            "Body": ["Your code is 123456"],
        }
        assert (
            request.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:tok").decode()
        )

    @pytest.mark.parametrize("status", [400, 401, 500, 503])
    async def test_refusals_are_delivery_errors(self, status: int) -> None:
        """A 4xx or 5xx becomes MessageDeliveryError (503 to our client), naming the provider."""
        _, transport = _recorder(status, b'{"code": 21211}')
        async with httpx.AsyncClient(transport=transport) as http:
            sms = TwilioSms(http, account_sid="AC1", auth_token="t", from_number="+15005550006")
            with pytest.raises(MessageDeliveryError) as caught:
                await sms.send_sms(to="+14155550123", body="x")
        assert caught.value.details == {"provider": "twilio", "status": status}

    async def test_network_failure_is_a_delivery_error(self) -> None:
        """A connection failure is reported, not raised raw."""

        def fail(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as http:
            sms = TwilioSms(http, account_sid="AC1", auth_token="t", from_number="+1")
            with pytest.raises(MessageDeliveryError):
                await sms.send_sms(to="+14155550123", body="x")


class TestSendGrid:
    async def test_request_shape(self) -> None:
        """A JSON POST to /v3/mail/send with personalizations, from, subject, content, Bearer."""
        seen, transport = _recorder(202)
        async with httpx.AsyncClient(transport=transport) as http:
            email = SendGridEmail(http, api_key="SG.key", from_email="no-reply@dwaybank.dev")
            await email.send_email(to="alice@example.com", subject="Code", body="Your code is 1")
        (request,) = seen
        assert str(request.url) == "https://api.sendgrid.com/v3/mail/send"
        assert request.headers["authorization"] == "Bearer SG.key"
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {
            "personalizations": [{"to": [{"email": "alice@example.com"}]}],
            "from": {"email": "no-reply@dwaybank.dev"},
            "subject": "Code",
            "content": [{"type": "text/plain", "value": "Your code is 1"}],
        }

    async def test_refusal_is_a_delivery_error(self) -> None:
        """SendGrid's 401 (a bad key) is a delivery error."""
        _, transport = _recorder(401, b'{"errors": []}')
        async with httpx.AsyncClient(transport=transport) as http:
            email = SendGridEmail(http, api_key="bad", from_email="a@b.c")
            with pytest.raises(MessageDeliveryError):
                await email.send_email(to="x@example.com", subject="s", body="b")


@pytest.mark.db
class TestOutbox:
    async def test_messenger_routes_channels_to_providers(self, db: Database) -> None:
        """SMS goes to the SMS provider and email to the email provider; the outbox records both."""
        seen, transport = _recorder(202)
        async with httpx.AsyncClient(transport=transport) as http:
            messenger = Messenger(
                sms=OutboxProvider(db), email=SendGridEmail(http, api_key="k", from_email="a@b.c")
            )
            await messenger.deliver(
                [
                    OutboundMessage(channel="sms", recipient="+14155550999", body="sms body"),
                    OutboundMessage(
                        channel="email", recipient="bob@example.com", subject="s", body="mail"
                    ),
                ]
            )
        assert len(seen) == 1
        async with db.connection() as conn:
            rows = await conn.fetch(
                "SELECT channel, body FROM auth_outbox WHERE recipient = '+14155550999'"
            )
        assert [(r["channel"], r["body"]) for r in rows] == [("sms", "sms body")]
