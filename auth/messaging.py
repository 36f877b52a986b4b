"""Sending SMS and email: provider protocols, Twilio and SendGrid adapters, the local outbox.

Domain code produces `OutboundMessage`s; the edge hands them to a `Messenger` after the
transaction that produced them commits (a rolled-back code is never sent). The adapters speak
the providers' real HTTP APIs with httpx:

* Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`,
  form-encoded `To`, `From`, `Body`, HTTP Basic auth with the account SID and auth token;
  201 with the message resource.
* SendGrid v3: `POST /v3/mail/send`, JSON `personalizations[].to[]`, `from`, `subject`,
  `content[]`, `Authorization: Bearer <api key>`; 202 with an empty body.

A timeout, a connection failure or a 5xx becomes `MessageDeliveryError` (503, retry later); a
4xx means our request or configuration is wrong and is logged with the provider's status only
(never the message, which carries a code). The `outbox` provider records messages in
PostgreSQL (`auth_outbox`) for development: `GET /api/v1/dev/outbox?to=` and `dwaybank outbox`.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

import httpx

from auth.constants import PROVIDER_TIMEOUT_S
from auth.errors import MessageDeliveryError
from auth.models import OutboundMessage
from auth.repository import outbox as repository
from kit.db import Database

logger = logging.getLogger(__name__)

TWILIO_BASE_URL: Final = "https://api.twilio.com"
SENDGRID_BASE_URL: Final = "https://api.sendgrid.com"


class SmsProvider(Protocol):
    """Sends one text message."""

    async def send_sms(self, *, to: str, body: str) -> None:
        """Deliver `body` to the E.164 number `to`."""
        ...


class EmailProvider(Protocol):
    """Sends one plain-text email."""

    async def send_email(self, *, to: str, subject: str, body: str) -> None:
        """Deliver an email to `to`."""
        ...


def _raise_for(provider: str, response: httpx.Response) -> None:
    if response.is_success:
        return
    logger.warning(
        "message provider refused", extra={"provider": provider, "status": response.status_code}
    )
    raise MessageDeliveryError(provider=provider, status=response.status_code)


class TwilioSms:
    """Twilio's Messages API."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        base_url: str = TWILIO_BASE_URL,
    ) -> None:
        self._client = client
        self._sid = account_sid
        self._token = auth_token
        self._from = from_number
        self._url = f"{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"

    async def send_sms(self, *, to: str, body: str) -> None:
        """POST the form Twilio expects."""
        try:
            response = await self._client.post(
                self._url,
                data={"To": to, "From": self._from, "Body": body},
                auth=(self._sid, self._token),
                timeout=PROVIDER_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise MessageDeliveryError(provider="twilio", reason=type(exc).__name__) from exc
        _raise_for("twilio", response)


class SendGridEmail:
    """SendGrid's v3 Mail Send API."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        from_email: str,
        base_url: str = SENDGRID_BASE_URL,
    ) -> None:
        self._client = client
        self._key = api_key
        self._from = from_email
        self._url = f"{base_url}/v3/mail/send"

    async def send_email(self, *, to: str, subject: str, body: str) -> None:
        """POST the JSON SendGrid expects."""
        payload = {
            "personalizations": [{"to": [{"email": to}]}],
            "from": {"email": self._from},
            "subject": subject,
            "content": [{"type": "text/plain", "value": body}],
        }
        try:
            response = await self._client.post(
                self._url,
                json=payload,
                headers={"Authorization": f"Bearer {self._key}"},
                timeout=PROVIDER_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise MessageDeliveryError(provider="sendgrid", reason=type(exc).__name__) from exc
        _raise_for("sendgrid", response)


class OutboxProvider:
    """Records messages in PostgreSQL instead of sending them (development, tests)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def send_sms(self, *, to: str, body: str) -> None:
        """Record a text message."""
        async with self._db.transaction() as conn:
            await repository.insert_message(
                conn, channel="sms", recipient=to, subject=None, body=body
            )

    async def send_email(self, *, to: str, subject: str, body: str) -> None:
        """Record an email."""
        async with self._db.transaction() as conn:
            await repository.insert_message(
                conn, channel="email", recipient=to, subject=subject, body=body
            )


class Messenger:
    """Routes outbound messages to the configured providers."""

    def __init__(self, *, sms: SmsProvider, email: EmailProvider) -> None:
        self._sms = sms
        self._email = email

    async def deliver(self, messages: list[OutboundMessage]) -> None:
        """Send each message with its channel's provider, in order."""
        for message in messages:
            if message.channel == "sms":
                await self._sms.send_sms(to=message.recipient, body=message.body)
            else:
                await self._email.send_email(
                    to=message.recipient, subject=message.subject or "DwayBank", body=message.body
                )
