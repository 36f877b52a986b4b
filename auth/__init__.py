"""Identity: passwords, registration, login, MFA, tokens, sessions, lockout, password reset.

Invariants, each enforced in Python and, where it can be, again in PostgreSQL:

* Passwords are stored only as argon2id hashes, computed in a bounded thread pool, never on
  the request loop; they are NFKC-normalised, never truncated, and checked against the policy,
  a 19,640-entry blocklist and the user's own email.
* Unknown email, wrong password and locked account answer identically; at most `threshold`
  guesses per account are ever checked inside a lockout window, however many arrive at once
  (admission slots, serialised per account by the UserShard actors, written through to Redis).
* One-time codes, backup codes, refresh tokens, authorization codes and client secrets are
  stored as hashes; TOTP seeds, signing keys and the code pepper are envelope-encrypted.
* A refresh token is used once; a replay outside the short retry grace revokes its family, and
  a token can have at most one child (a unique index).
* Access tokens are 15-minute RS256 JWTs from a rotating, published key set; a key is
  published before it signs and stays published until its last token expires.
* Every authentication event is written to audit_log in the transaction of its action; no
  password, code, token or secret is ever logged.

Layout: `service/` (rules), `repository/` (SQL), `endpoints/` (HTTP), and beside them the
pieces each rule needs: `passwords`, `otp`, `tokens`, `keys`, `refresh`, `sessions`,
`challenges`, `lockout` (with the `LoginGuard` protocol the actors implement), `messaging`
(SMS/email providers), `audit`. `assembly.assemble` wires them for a process.
"""
