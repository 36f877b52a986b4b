"""AES-256-GCM envelope encryption for secrets at rest.

Each record gets its own random 256-bit data key (DEK). The record is sealed with the DEK, and
the DEK is sealed with the key-encryption key (KEK); both seals are AES-256-GCM with fresh
96-bit nonces. The caller's `context` (for instance `"user_mfa.secret_key:<user id>"`) is bound
in as associated data, so a ciphertext copied onto another row or column fails to open.

An envelope is one ASCII string, safe for a TEXT column:
`v1.<kek id>.<base64url(nonce || sealed DEK)>.<base64url(nonce || sealed record)>`.
The KEK id is the first 8 bytes of SHA-256 of the KEK, so keys can be rotated: new envelopes
use the primary KEK; retired KEKs still open old ones until they are re-sealed.

In development a missing KEK is generated into `data_dir/secrets/kek` with mode 0600 (the
folder 0700); in production it must come from `DWAYBANK_KEK`, and its absence stops the process.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kit.errors import ConfigurationError, InvariantError
from kit.settings import Settings

KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12  # the GCM standard nonce
ENVELOPE_VERSION: Final = "v1"
KEK_ID_BYTES: Final = 8
ENVELOPE_LENGTH_MAX: Final = (
    1 << 24
)  # 16 MiB of text; documents larger than this belong in blob storage
KEK_FILE_NAME: Final = "kek"
_DEK_AAD: Final = b"dwaybank/dek/" + ENVELOPE_VERSION.encode()


class DecryptionError(InvariantError):
    """An envelope failed to open: tampered, wrong context, or sealed under an unknown key."""

    code = "CRYPTO_DECRYPT_FAILED"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kek_id(kek: bytes) -> str:
    """The public identifier of a key-encryption key."""
    return hashlib.sha256(kek).digest()[:KEK_ID_BYTES].hex()


def decode_kek(text: str) -> bytes:
    """Read a base64url (or standard base64) 32-byte key."""
    try:
        raw = _b64decode(text.strip().replace("+", "-").replace("/", "_"))
    except ValueError as exc:
        raise ConfigurationError("a key-encryption key is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(f"a key-encryption key must be {KEY_BYTES} bytes")
    return raw


def generate_kek() -> str:
    """A fresh key-encryption key as base64url text."""
    return _b64encode(secrets.token_bytes(KEY_BYTES))


class KeyRing:
    """The primary KEK that seals, and the retired KEKs that may still open."""

    def __init__(self, primary: bytes, retired: tuple[bytes, ...] = ()) -> None:
        for key in (primary, *retired):
            if len(key) != KEY_BYTES:
                raise ConfigurationError(f"a key-encryption key must be {KEY_BYTES} bytes")
        self._primary_id = kek_id(primary)
        self._keys = {kek_id(key): AESGCM(key) for key in (*retired, primary)}

    @property
    def primary_id(self) -> str:
        """Id of the key new envelopes are sealed under."""
        return self._primary_id

    def seal_key(self, dek: bytes) -> tuple[str, bytes]:
        """Seal a data key under the primary KEK; returns (kek id, nonce || sealed key)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return self._primary_id, nonce + self._keys[self._primary_id].encrypt(nonce, dek, _DEK_AAD)

    def open_key(self, key_id: str, sealed: bytes) -> bytes:
        """Open a data key sealed under the KEK `key_id`."""
        aead = self._keys.get(key_id)
        if aead is None:
            raise DecryptionError("the envelope was sealed under an unknown key", kek_id=key_id)
        try:
            return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _DEK_AAD)
        except InvalidTag as exc:
            raise DecryptionError("the data key failed to open", kek_id=key_id) from exc


class EnvelopeCipher:
    """Seals and opens records with per-record data keys under a `KeyRing`."""

    def __init__(self, keyring: KeyRing) -> None:
        self._keyring = keyring

    def encrypt(self, plaintext: bytes, *, context: str) -> str:
        """Seal `plaintext`, bound to `context`, into an envelope string."""
        dek = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        key_id, sealed_dek = self._keyring.seal_key(dek)
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = f"{ENVELOPE_VERSION}.{key_id}.{context}".encode()
        sealed = AESGCM(dek).encrypt(nonce, plaintext, aad)
        return f"{ENVELOPE_VERSION}.{key_id}.{_b64encode(sealed_dek)}.{_b64encode(nonce + sealed)}"

    def decrypt(self, envelope: str, *, context: str) -> bytes:
        """Open an envelope sealed with the same `context`."""
        if len(envelope) > ENVELOPE_LENGTH_MAX:
            raise DecryptionError("the envelope is longer than any we seal")
        parts = envelope.split(".")
        if len(parts) != 4 or parts[0] != ENVELOPE_VERSION:
            raise DecryptionError("the envelope is not in a known format")
        _, key_id, sealed_dek_text, sealed_text = parts
        try:
            sealed_dek, sealed = _b64decode(sealed_dek_text), _b64decode(sealed_text)
        except ValueError as exc:
            raise DecryptionError("the envelope is not valid base64") from exc
        dek = self._keyring.open_key(key_id, sealed_dek)
        aad = f"{ENVELOPE_VERSION}.{key_id}.{context}".encode()
        try:
            return AESGCM(dek).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise DecryptionError("the envelope failed to open", kek_id=key_id) from exc

    def encrypt_text(self, plaintext: str, *, context: str) -> str:
        """`encrypt` for UTF-8 text."""
        return self.encrypt(plaintext.encode(), context=context)

    def decrypt_text(self, envelope: str, *, context: str) -> str:
        """`decrypt` for UTF-8 text."""
        return self.decrypt(envelope, context=context).decode()

    def needs_reseal(self, envelope: str) -> bool:
        """True when the envelope is sealed under a retired KEK."""
        parts = envelope.split(".", 2)
        return len(parts) < 2 or parts[1] != self._keyring.primary_id


def _read_kek_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"the key file {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    return decode_kek(path.read_text(encoding="ascii"))


def _create_kek_file(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    text = generate_kek()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first; use theirs so both agree on one key.
        return _read_kek_file(path)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text + "\n")
    return decode_kek(text)


def load_keyring(settings: Settings) -> KeyRing:
    """The key ring from `DWAYBANK_KEK`, or, in development only, from the data folder."""
    retired = tuple(
        decode_kek(part)
        for part in (settings.kek_retired.get_secret_value() if settings.kek_retired else "").split(
            ","
        )
        if part.strip()
    )
    if settings.kek is not None:
        return KeyRing(decode_kek(settings.kek.get_secret_value()), retired)
    if settings.is_production:
        raise ConfigurationError("DWAYBANK_KEK is required in production (32 bytes, base64url)")
    path = settings.secrets_dir / KEK_FILE_NAME
    primary = _read_kek_file(path) if path.exists() else _create_kek_file(path)
    return KeyRing(primary, retired)
