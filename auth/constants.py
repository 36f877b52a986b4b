"""Limits and tunables of the identity domain, each with its unit and why it has its value.

Settings (`kit/settings.py`, `auth_*`) hold what an operator may change; these are the fixed
rules of the protocols and the bounds that keep memory and work finite.
"""

from __future__ import annotations

from typing import Final

from kit.ratelimit import RateLimitPolicy, Window

# --- passwords
PASSWORD_LENGTH_MAX: Final = 128  # the issue's bound; counted in code points after NFKC
PASSWORD_HASH_QUEUE_MAX: Final = 256  # hashes waiting for a worker; beyond this, 503
# A password is rejected when it contains the user's email local part of at least this length.
EMAIL_PART_LENGTH_MIN: Final = 4
BLOCKLIST_FILE: Final = "common_passwords.txt"
BLOCKLIST_SIZE_MIN: Final = 10_000  # the shipped list must hold at least this many entries

# --- one-time codes (NIST SP 800-63B: >= 20 bits, <= 10 minutes, single use)
CODE_DIGITS: Final = 6
CODE_TTL_S: Final = 600
CODE_ATTEMPTS_MAX: Final = 5  # guesses per code; then the code is dead
BACKUP_CODE_COUNT: Final = 10  # the seed's "10 single-use backup codes"
BACKUP_CODE_LENGTH: Final = 10  # base32 characters: 50 bits each
BACKUP_CODE_INPUT_LENGTH_MAX: Final = 32

# --- TOTP (RFC 6238, Google Authenticator's profile)
TOTP_SECRET_BYTES: Final = 20  # 160 bits, RFC 4226's recommendation
TOTP_DIGITS: Final = 6
TOTP_STEP_S: Final = 30
TOTP_SKEW_STEPS: Final = 1  # one step either side
TOTP_ISSUER: Final = "DwayBank"

# --- MFA challenges (the mfa_token of a login waiting for its second factor)
MFA_CHALLENGE_TTL_S: Final = 300
MFA_CHALLENGE_ATTEMPTS_MAX: Final = 3  # the seed's MFAVerification.max_attempts
MFA_CHALLENGE_SENDS_MAX: Final = 3  # SMS/email codes one challenge may send
MFA_FRESH_S: Final = 300  # removing a factor needs a second factor verified this recently
WEBAUTHN_CHALLENGE_TTL_S: Final = 300
WEBAUTHN_TIMEOUT_MS: Final = 60_000
WEBAUTHN_CREDENTIALS_MAX: Final = 10  # per user

# --- tokens
SIGNING_KEY_BITS: Final = 2048  # RS256 over RSA-2048: NIST-approved through 2030
TOKEN_LEEWAY_S: Final = 30  # clock skew tolerated between our replicas on exp/nbf/iat
TOKEN_LENGTH_MAX: Final = 8_192  # a JWT longer than this is refused before parsing
# Verified access tokens a verifier remembers (~1 KiB each): repeats skip the RSA check.
VERIFIED_TOKENS_MAX: Final = 10_000
# RFC 9068 `typ`, so an ID token is never taken for an access token.
ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a token type name, not a secret
REFRESH_TOKEN_BYTES: Final = 32  # 256 bits
REFRESH_GRACE_S: Final = 10  # a concurrent retry of a just-rotated token gets the same child
ACR_PASSWORD: Final = "aal1"  # noqa: S105 - an assurance level, not a secret
ACR_MFA: Final = "aal2"
FIRST_PARTY_SCOPES: Final = ("openid", "profile", "email", "wallet", "payments")
SESSIONS_LISTED_MAX: Final = 100  # sessions one user may hold; the oldest is evicted beyond

# --- OAuth
AUTHORIZATION_CODE_TTL_S: Final = 60  # RFC 6749 recommends at most 10 minutes; we need seconds
AUTHORIZATION_CODE_BYTES: Final = 32
CLIENT_SECRET_BYTES: Final = 32
OAUTH_SCOPES: Final = ("openid", "profile", "email", "wallet", "payments", "offline_access")

# --- outbox
OUTBOX_PAGE_MAX: Final = 50
PROVIDER_TIMEOUT_S: Final = 10.0  # one HTTP call to Twilio or SendGrid

# --- rate limits: the seed's authRateLimits, applied per IP and per account
LOGIN_LIMIT: Final = RateLimitPolicy("login", (Window(5, 15 * 60),))
REGISTER_LIMIT: Final = RateLimitPolicy("register", (Window(3, 60 * 60),))
MFA_VERIFY_LIMIT: Final = RateLimitPolicy("mfa_verify", (Window(10, 5 * 60),))
PASSWORD_RESET_LIMIT: Final = RateLimitPolicy("password_reset", (Window(3, 60 * 60),))
# Not in the seed: email verification shares mfa_verify's budget (both guess 6-digit codes),
# token refresh is bounded so that a stolen refresh token cannot be hammered.
VERIFY_EMAIL_LIMIT: Final = RateLimitPolicy("verify_email", (Window(10, 5 * 60),))
REFRESH_LIMIT: Final = RateLimitPolicy("refresh", (Window(60, 60),))
