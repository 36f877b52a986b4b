"""One-time passwords: HOTP (RFC 4226), TOTP (RFC 6238), numeric codes and backup codes.

Our own implementation of the two RFCs (a few lines over `hmac`), checked against both RFCs'
test vectors, including 8-digit SHA-256/SHA-512 TOTP and time steps beyond 2^32. Google
Authenticator's profile is SHA-1, 6 digits, 30 seconds; we accept one step of clock skew either
side and return the matched step so that the caller can refuse a replay (a step at or before
the last accepted one).

Codes (email verification, password reset, SMS/email factors) are 6 random digits; backup codes
are 10 base32 characters (50 bits). Neither is stored: only an HMAC-SHA256 under a server-held
pepper (sealed in PostgreSQL under the key-encryption key), bound to the code's purpose and
user, so a database dump alone does not let anyone guess them offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from datetime import datetime
from typing import Final
from urllib.parse import quote, urlencode

from auth.constants import (
    BACKUP_CODE_LENGTH,
    CODE_DIGITS,
    TOTP_DIGITS,
    TOTP_ISSUER,
    TOTP_SECRET_BYTES,
    TOTP_SKEW_STEPS,
    TOTP_STEP_S,
)

ALGORITHMS: Final = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
BASE32_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
CODE_INPUT_LENGTH_MAX: Final = 16


def hotp(secret: bytes, counter: int, *, digits: int = 6, algorithm: str = "sha1") -> str:
    """RFC 4226 HOTP value of `counter`, zero-padded to `digits`."""
    if not 6 <= digits <= 10 or counter < 0:
        raise ValueError("HOTP needs 6-10 digits and a non-negative counter")
    digest = hmac.new(secret, struct.pack(">Q", counter), ALGORITHMS[algorithm]).digest()
    offset = digest[-1] & 0x0F
    binary = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(at: datetime, *, step_s: int = TOTP_STEP_S) -> int:
    """The RFC 6238 counter T of an instant (T0 = the Unix epoch)."""
    return int(at.timestamp()) // step_s


def totp(
    secret: bytes,
    at: datetime,
    *,
    digits: int = TOTP_DIGITS,
    step_s: int = TOTP_STEP_S,
    algorithm: str = "sha1",
) -> str:
    """RFC 6238 TOTP value at `at`."""
    return hotp(secret, time_step(at, step_s=step_s), digits=digits, algorithm=algorithm)


def match_totp(
    secret: bytes,
    code: str,
    at: datetime,
    *,
    skew_steps: int = TOTP_SKEW_STEPS,
    digits: int = TOTP_DIGITS,
) -> int | None:
    """The time step `code` belongs to (within the skew), or None; constant-time per step."""
    # ASCII digits only: `str.isdigit` also accepts Arabic-Indic, full-width and superscript
    # digits, which no authenticator shows and which `hmac.compare_digest` refuses to compare.
    if len(code) != digits or not (code.isascii() and code.isdigit()):
        return None
    now_step = time_step(at)
    found: int | None = None
    for step in range(now_step - skew_steps, now_step + skew_steps + 1):
        if hmac.compare_digest(hotp(secret, step, digits=digits), code):
            found = step if found is None else found
    return found


def new_totp_secret() -> bytes:
    """A fresh 160-bit TOTP secret from the CSPRNG."""
    return secrets.token_bytes(TOTP_SECRET_BYTES)


def base32_secret(secret: bytes) -> str:
    """The secret as authenticator apps show and accept it (unpadded base32)."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def provisioning_uri(secret: bytes, *, account: str, issuer: str = TOTP_ISSUER) -> str:
    """The `otpauth://totp/...` URI a QR code carries to Google Authenticator."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": base32_secret(secret),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": TOTP_DIGITS,
            "period": TOTP_STEP_S,
        }
    )
    return f"otpauth://totp/{label}?{query}"


def new_numeric_code(digits: int = CODE_DIGITS) -> str:
    """A uniformly random code of `digits` digits (leading zeros kept)."""
    return str(secrets.randbelow(10**digits)).zfill(digits)


def new_backup_code() -> str:
    """A backup code: 10 base32 characters, shown as `XXXXX-XXXXX`."""
    raw = "".join(secrets.choice(BASE32_ALPHABET) for _ in range(BACKUP_CODE_LENGTH))
    half = BACKUP_CODE_LENGTH // 2
    return f"{raw[:half]}-{raw[half:]}"


def canonical_backup_code(code: str) -> str:
    """What a typed backup code means: upper case, no spaces or dashes."""
    return "".join(c for c in code.upper() if c.isalnum())


def code_digest(pepper: bytes, *, purpose: str, subject: str, code: str) -> bytes:
    """HMAC-SHA256 of a code, bound to what it proves and whose it is."""
    message = f"{purpose}\x00{subject}\x00{code}".encode()
    return hmac.new(pepper, message, hashlib.sha256).digest()


def token_digest(token: str) -> bytes:
    """SHA-256 of a high-entropy token (refresh tokens, authorization codes, mfa tokens)."""
    return hashlib.sha256(token.encode()).digest()
