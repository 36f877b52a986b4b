"""Envelope encryption: per-record data keys under a key-encryption key, bound to a context."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from kit.crypto import (
    KEY_BYTES,
    DecryptionError,
    EnvelopeCipher,
    KeyRing,
    decode_kek,
    generate_kek,
    load_keyring,
)
from kit.errors import ConfigurationError
from kit.settings import Environment, Settings


def _cipher() -> EnvelopeCipher:
    return EnvelopeCipher(KeyRing(decode_kek(generate_kek())))


class TestEnvelope:
    def test_round_trip(self) -> None:
        """What is sealed opens to the same bytes with the same context."""
        cipher = _cipher()
        envelope = cipher.encrypt(b"JBSWY3DPEHPK3PXP", context="user_mfa.secret_key:u1")
        assert cipher.decrypt(envelope, context="user_mfa.secret_key:u1") == b"JBSWY3DPEHPK3PXP"
        assert b"JBSWY3DPEHPK3PXP" not in envelope.encode()

    def test_each_record_gets_its_own_data_key_and_nonce(self) -> None:
        """Sealing the same plaintext twice gives different envelopes."""
        cipher = _cipher()
        first = cipher.encrypt_text("same", context="c")
        second = cipher.encrypt_text("same", context="c")
        assert first != second
        assert first.split(".")[2] != second.split(".")[2]

    def test_wrong_context_fails(self) -> None:
        """An envelope moved to another row or column does not open."""
        cipher = _cipher()
        envelope = cipher.encrypt_text("secret", context="row:1")
        with pytest.raises(DecryptionError):
            cipher.decrypt_text(envelope, context="row:2")

    def test_tampering_fails(self) -> None:
        """Flipping one character of the sealed record is detected."""
        cipher = _cipher()
        envelope = cipher.encrypt_text("secret", context="c")
        head, last = envelope.rsplit(".", 1)
        flipped = last[:-2] + ("A" if last[-2] != "A" else "B") + last[-1]
        with pytest.raises(DecryptionError):
            cipher.decrypt_text(f"{head}.{flipped}", context="c")

    @pytest.mark.parametrize("envelope", ["", "v2.a.b.c", "v1.a.b", "v1.x.!!.!!"])
    def test_malformed_envelopes_fail(self, envelope: str) -> None:
        """Garbage is refused with DecryptionError, never an unhandled exception."""
        with pytest.raises(DecryptionError):
            _cipher().decrypt(envelope, context="c")

    def test_rotation_keeps_old_envelopes_readable(self) -> None:
        """After rotation, envelopes sealed under the retired KEK still open and need resealing."""
        old, new = decode_kek(generate_kek()), decode_kek(generate_kek())
        sealed_old = EnvelopeCipher(KeyRing(old)).encrypt_text("v", context="c")
        rotated = EnvelopeCipher(KeyRing(new, (old,)))
        assert rotated.decrypt_text(sealed_old, context="c") == "v"
        assert rotated.needs_reseal(sealed_old)
        assert not rotated.needs_reseal(rotated.encrypt_text("v", context="c"))

    def test_unknown_kek_fails(self) -> None:
        """An envelope from a key that is not in the ring does not open."""
        sealed = _cipher().encrypt_text("v", context="c")
        with pytest.raises(DecryptionError, match="unknown key"):
            _cipher().decrypt_text(sealed, context="c")


class TestKeyLoading:
    def test_development_generates_a_private_key_file(self, tmp_path: Path) -> None:
        """In development the KEK is generated once into the data folder with mode 0600."""
        settings = Settings(data_dir=tmp_path)
        first = load_keyring(settings)
        key_file = tmp_path / "secrets" / "kek"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
        assert load_keyring(settings).primary_id == first.primary_id

    def test_world_readable_key_file_is_refused(self, tmp_path: Path) -> None:
        """A key file others can read stops the process."""
        settings = Settings(data_dir=tmp_path)
        load_keyring(settings)
        (tmp_path / "secrets" / "kek").chmod(0o644)
        with pytest.raises(ConfigurationError, match="readable by others"):
            load_keyring(settings)

    def test_production_requires_the_environment(self, tmp_path: Path) -> None:
        """Production never generates a key; it needs DWAYBANK_KEK."""
        settings = Settings(data_dir=tmp_path, env=Environment.PRODUCTION)
        with pytest.raises(ConfigurationError, match="DWAYBANK_KEK is required"):
            load_keyring(settings)
        assert not (tmp_path / "secrets").exists()
        kek = generate_kek()
        ring = load_keyring(
            Settings(data_dir=tmp_path, env=Environment.PRODUCTION, kek=SecretStr(kek))
        )
        assert ring.primary_id == KeyRing(decode_kek(kek)).primary_id

    @pytest.mark.parametrize("text", ["short", "!!!!", "A" * 100])
    def test_bad_keys_are_refused(self, text: str) -> None:
        """A KEK must be 32 bytes of base64."""
        with pytest.raises(ConfigurationError):
            decode_kek(text)

    def test_generated_keys_are_32_bytes(self) -> None:
        """generate_kek gives a 256-bit key."""
        assert len(decode_kek(generate_kek())) == KEY_BYTES
