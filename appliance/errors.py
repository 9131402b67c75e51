"""Errors a user can cause or meet: one human sentence, and the next step."""
from __future__ import annotations


class UserError(Exception):
    """An error to show a nurse, a doctor or a technician as it is: never a traceback.

    ``message`` says what went wrong in one sentence; ``hint`` says what to do next.
    The CLI prints both and exits non-zero; the kiosk shows both in a banner.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class BadImage(UserError):
    """An upload or file that is not an image we can read safely."""


class PackError(UserError):
    """A model pack that is missing, altered, unsigned or inconsistent."""


class StoreError(UserError):
    """The record store could not do what was asked (full disk, read-only, damaged file)."""


class NotFound(UserError):
    exit_code = 3
