"""Limits and tunables of the edge stack, each with its unit and the reason for its value.

The values an operator tunes (body limits, windows, lists) live in `gateway.policy` as
configuration with these as defaults; the rest bound the stack's own memory and CPU.
"""

from __future__ import annotations

from typing import Final

from kit.ratelimit import LIMIT_MAX, WINDOW_S_MAX

# Kong's `request-size-limiting` with the seed's `allowed_payload_size: 128` in kilobytes.
BODY_BYTES_MAX_DEFAULT: Final = 128 * 1024
# No configuration may let one request body exceed this; larger uploads need another path.
BODY_BYTES_MAX_CEILING: Final = 100 * 1024 * 1024

# The seed's CORS `max_age`: browsers cache a preflight answer for an hour.
CORS_MAX_AGE_S_DEFAULT: Final = 3600

# RFC 9470 `max_age`: a second factor older than five minutes no longer counts for step-up.
STEP_UP_MAX_AGE_S_DEFAULT: Final = 300
# A bearer token longer than this is refused before any parsing (ours are ~1 KiB).
BEARER_TOKEN_LENGTH_MAX: Final = 8192
# Principals kept built per replica, one per verified token the verifier remembers (its bound).
PRINCIPALS_MAX: Final = 10_000

# A rate-limit decision slower than this counts as "the limiter is unreachable".
RATE_LIMIT_CHECK_TIMEOUT_S_DEFAULT: Final = 0.25
# The longest window and the largest limit a rule may declare: what the exact limiter of
# `kit.ratelimit` keeps a log for (a week; 100,000 hits). Longer belongs in a quota system.
RATE_LIMIT_WINDOW_S_MAX: Final = int(WINDOW_S_MAX)
RATE_LIMIT_LIMIT_MAX: Final = LIMIT_MAX
# The in-process limiter keeps at most this many keys (least recently used are dropped).
RATE_LIMIT_KEYS_MAX: Final = 10_000
# Window and rule names go into header names and metric labels, so they stay short.
RATE_LIMIT_NAME_LENGTH_MAX: Final = 32

# Kong keeps an LRU of 10,000 user-agent verdicts per bot-detection instance; so do we.
USER_AGENT_CACHE_SIZE_MAX: Final = 10_000
# Only the head of a user agent is matched, which bounds regex work per request.
USER_AGENT_LENGTH_MAX: Final = 512

# X-Forwarded-For hops examined from the right; a longer chain is cut (and its left end ignored).
FORWARDED_HOPS_MAX: Final = 16

# Audit lines wait at most this long for their batch (a crash loses at most this much of them),
# and a batch holds at most this many lines: a bounded buffer per replica.
AUDIT_BATCH_DELAY_S_MAX: Final = 5.0
AUDIT_BATCH_LINES_MAX: Final = 10_000

# Resolved routes cached per (method, path); paths with ids churn it, so it is bounded.
ROUTE_CACHE_SIZE_MAX: Final = 4096

# The seed's Prometheus buckets (Task 3.5), with finer steps below 100 ms added so that
# percentiles of a millisecond-scale API mean something; every seed boundary is kept.
LATENCY_BUCKETS_S_DEFAULT: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.3,
    0.5,
    0.7,
    1.0,
    3.0,
    5.0,
    7.0,
    10.0,
)

# Readiness thresholds for the node's memory and CPU (percent of the machine).
MEMORY_PERCENT_MAX_DEFAULT: Final = 95.0
CPU_PERCENT_MAX_DEFAULT: Final = 95.0
