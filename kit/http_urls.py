"""URLs that clients register for us to call (transaction hooks, webhook subscriptions)."""

from __future__ import annotations

import httpx


def is_requestable(url: str) -> bool:
    """Whether the HTTP client can build a request to `url` (its host one IDNA can encode, for
    one). A registered URL it cannot would fail every call (and, unguarded, the caller's work
    around it), so registration refuses it."""
    try:
        # Building the request, not only parsing the URL: parsing accepts an `xn--` label with
        # no punycode after it (`http://xn--/`), which only building finds (an IDNAError, a
        # ValueError).
        httpx.Request("POST", url)
    except (httpx.InvalidURL, ValueError):
        return False
    return True
