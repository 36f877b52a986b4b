"""The HTTP edge that every ingress application mounts.

Request ids, one error renderer (RFC 9457 problem+json on our APIs, Blnk's body on /ledger),
health and metrics routes, and, as the gateway grows, size limits, security headers, CORS, bot
and IP rules, JWT with MFA step-up, rate limits and audit. It runs inside each ingress replica,
so policy is identical everywhere and costs no extra hop. It never imports Ray directly.
"""
