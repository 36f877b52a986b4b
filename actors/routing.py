"""Shard routing: which named shard actor owns a key. Pure; no Ray.

Jump consistent hashing (Lamping and Veach, 2014) over a 64-bit BLAKE2b digest of the key: the
same key always maps to the same shard for a given shard count, and changing the count moves
only the keys that must move (about 1/n of them). Actor names follow the house convention
`"{kind}-shard-{index:03d}"` in one namespace.
"""

from __future__ import annotations

import hashlib
from typing import Final

NAMESPACE: Final = "dwaybank"
SHARD_COUNT_MAX: Final = 1024  # a name has three digits; far above any sensible count
_JUMP_MULTIPLIER: Final = 2862933555777941757
_MASK_64: Final = (1 << 64) - 1


def _digest64(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def jump_hash(key64: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit key into `buckets` buckets."""
    if not 1 <= buckets <= SHARD_COUNT_MAX:
        raise ValueError(f"shard count must be between 1 and {SHARD_COUNT_MAX}")
    bucket, candidate = -1, 0
    while candidate < buckets:
        bucket = candidate
        key64 = (key64 * _JUMP_MULTIPLIER + 1) & _MASK_64
        candidate = int((bucket + 1) * ((1 << 31) / ((key64 >> 33) + 1)))
    return bucket


def shard_for(key: str, shard_count: int) -> int:
    """The index of the shard that owns `key`."""
    return jump_hash(_digest64(key), shard_count)


def actor_name(kind: str, index: int) -> str:
    """The Ray actor name of shard `index` of `kind` (e.g. `ledger-shard-000`)."""
    if not 0 <= index < SHARD_COUNT_MAX:
        raise ValueError("shard index out of range")
    return f"{kind}-shard-{index:03d}"
