"""Errors of the users domain.

```
ValidationError
  InvalidEmailError     USER_INVALID_EMAIL   422
  InvalidPhoneError     USER_INVALID_PHONE   422
ConflictError
  EmailTakenError       USER_EMAIL_TAKEN     409  (never shown to clients by registration)
NotFoundError
  UserNotFoundError     USER_NOT_FOUND       404
```
"""

from __future__ import annotations

from typing import ClassVar

from kit.errors import ConflictError, NotFoundError, ValidationError


class InvalidEmailError(ValidationError):
    """The email address is not a valid address."""

    code: ClassVar[str] = "USER_INVALID_EMAIL"
    default_message: ClassVar[str] = "The email address is not valid."


class InvalidPhoneError(ValidationError):
    """The phone number cannot be read as an international number."""

    code: ClassVar[str] = "USER_INVALID_PHONE"
    default_message: ClassVar[str] = "The phone number is not valid."


class EmailTakenError(ConflictError):
    """Another user already has this email address."""

    code: ClassVar[str] = "USER_EMAIL_TAKEN"
    default_message: ClassVar[str] = "The email address is already registered."


class UserNotFoundError(NotFoundError):
    """No user has this id or email."""

    code: ClassVar[str] = "USER_NOT_FOUND"
    default_message: ClassVar[str] = "The user was not found."
