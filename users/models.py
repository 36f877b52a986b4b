"""Internal types of a user record."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    """What a user may administer (CHECKed in migration 0200)."""

    USER = "user"
    ADMIN = "admin"


class Tier(StrEnum):
    """The commercial tier; the gateway keys some limits off it."""

    BASIC = "basic"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


class KycStatus(StrEnum):
    """users.kyc_status, as the data model CHECKs it."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    UNDER_REVIEW = "under_review"


@dataclass(frozen=True, slots=True)
class User:
    """One users row, without anything a caller should not hold longer than needed."""

    id: uuid.UUID
    email: str
    password_hash: str
    phone_number: str | None
    kyc_status: KycStatus
    role: Role
    tier: Tier
    is_active: bool
    email_verified_at: datetime | None
    locked_at: datetime | None
    created_at: datetime

    @property
    def is_verified(self) -> bool:
        """True once the email address was proven."""
        return self.email_verified_at is not None

    @property
    def is_locked(self) -> bool:
        """True while an administrator's lock stands (only an unlock lifts it)."""
        return self.locked_at is not None

    @classmethod
    def from_row(cls, row: Any) -> User:
        """Build from an asyncpg record of `users`."""
        return cls(
            id=row["id"],
            email=row["email"],
            password_hash=row["password_hash"],
            phone_number=row["phone_number"],
            kyc_status=KycStatus(row["kyc_status"] or KycStatus.PENDING),
            role=Role(row["role"]),
            tier=Tier(row["tier"]),
            is_active=bool(row["is_active"]),
            email_verified_at=row["email_verified_at"],
            locked_at=row["locked_at"],
            created_at=row["created_at"],
        )
