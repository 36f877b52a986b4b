"""URLs that clients register for us to call (transaction hooks, webhook subscriptions)."""

from __future__ import annotations

import httpx


def is_requestable(url: str) -> bool:
    """Whether the HTTP client can build a request to `url` (its host one IDNA can encode, for
    one). A registered URL it cannot would fail every call (and, unguarded, the caller's work
    around it), so registration refuses it."""
    try:
        httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return True
