"""The HTTP edge that every ingress application mounts.

`gateway.app.create_app` wraps the domain routers in the edge policy stack, one pure ASGI
layer (`gateway.stack`) running the policies in the issue's order: request id, request size limit, bot detection, the admin IP
allow-list, CORS, an authentication slot (bearer JWT, admin role, RFC 9470 step-up) and a
rate-limit slot (per route, per tier, exact sliding windows), with security headers, one error
renderer (RFC 9457 problem+json on our APIs, Blnk's body on /ledger), Prometheus metrics and a
JSON audit line on every answer. It also serves health, metrics and the OpenAPI document.

Everything it decides by is configuration (`gateway.policy`, `config/gateway.yaml`). It runs
inside each ingress replica, so policy is identical everywhere and costs no extra hop. It never
imports Ray: the token verifier and the rate limiter are protocols (`gateway.principal`,
`gateway.limiter`) that the composition root fills with the identity area's implementations.
"""
