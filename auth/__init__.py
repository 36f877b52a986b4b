"""Identity: passwords, registration, login, MFA, tokens, sessions, lockout, password reset.

Invariants: passwords are stored only as argon2id hashes, hashed off the request loop; secrets
at rest (TOTP seeds) are envelope-encrypted; a refresh token is used once, and a replay revokes
its family; access tokens are short-lived RS256 JWTs from a rotating, published key set; no
password, code, token or secret is ever logged.
"""
