"""Locust scenario for identity: sign-up, verification through the dev outbox, login, refresh.

Run against a development `make run` (the outbox route exists only in development):

    locust -f loadtests/auth_flows.py --headless --host http://127.0.0.1:8000 -u 10 -r 10 -t 30s

Each simulated user registers once (a fresh address), reads its verification code from
`GET /api/v1/dev/outbox?to=`, verifies, then loops: refresh its tokens often, list its sessions
sometimes, sign in again rarely. The seed's per-IP limits (login 5/15 min, register 3/hour)
apply to a load generator on one address too: expect 429s beyond them, which locust counts as
successes when they are the documented answer.
"""

from __future__ import annotations

import re
import uuid

from locust import FastHttpUser, between, task

PASSWORD = "Load-Test-Password-2026!"  # noqa: S105 - the simulated users' password
CODE = re.compile(r"\b(\d{6})\b")


class IdentityUser(FastHttpUser):
    """A customer of the mobile app."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.email = f"load-{uuid.uuid4().hex[:12]}@example.com"
        self.access = ""
        self.refresh_token = ""
        self.client.post(
            "/api/v1/auth/register",
            json={"email": self.email, "password": PASSWORD},
            name="/register",
        )
        outbox = self.client.get(
            "/api/v1/dev/outbox", params={"to": self.email}, name="/dev/outbox"
        ).json()
        found = CODE.search(outbox["messages"][0]["body"]) if outbox.get("messages") else None
        if found:
            self.client.post(
                "/api/v1/auth/verify-email",
                json={"email": self.email, "code": found.group(1)},
                name="/verify-email",
            )
        self._login()

    def _login(self) -> None:
        with self.client.post(
            "/api/v1/auth/login",
            json={"email": self.email, "password": PASSWORD},
            name="/login",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                self.access = response.json()["access_token"]
                self.refresh_token = response.json()["refresh_token"]
            elif response.status_code == 429:
                response.success()

    @task(10)
    def refresh(self) -> None:
        if not self.refresh_token:
            return
        with self.client.post(
            "/api/v1/auth/refresh",
            json={"refresh_token": self.refresh_token},
            name="/refresh",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                self.access = response.json()["access_token"]
                self.refresh_token = response.json()["refresh_token"]
            elif response.status_code == 429:
                response.success()

    @task(3)
    def sessions(self) -> None:
        if self.access:
            self.client.get(
                "/api/v1/auth/sessions",
                headers={"Authorization": f"Bearer {self.access}"},
                name="/sessions",
            )

    @task(1)
    def login_again(self) -> None:
        self._login()
