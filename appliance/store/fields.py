"""Small shared pieces of every record: ids, times, copies, and checked text fields."""
from __future__ import annotations

import re
import unicodedata
import uuid as _uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .. import clock
from ..errors import UserError
from ..i18n import N_

# Control characters have no place in a name or an address (they break CSV, print and search).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_uuid() -> str:
    return str(_uuid.uuid4())


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds and a Z, as every record stores times (the appliance's clock)."""
    return format_time(clock.now())


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def later_than(previous: str | None) -> str:
    """Now, or one millisecond after ``previous`` when the clock is a little behind it.

    Two edits within a millisecond, or a clock stepped back a few minutes, still leave a record's
    dates in order. A clock a day or more behind the record's date (the box was reset to 1970, or
    the record was dated 2099 by a mistyped clock) gives its own time: dates are information, what
    the box's clock said. Merges never depend on them: they order versions by their post's change
    numbers (appliance.store.ordering).
    """
    now = utc_now()
    if previous and now <= previous:
        try:
            before = parse_time(previous)
            if before - parse_time(now) <= clock.FUTURE_SLACK:
                return format_time(before + timedelta(milliseconds=1))
        except ValueError:
            pass
    return now


def is_time(value: Any) -> bool:
    return isinstance(value, str) and bool(_ISO_TIME.match(value))


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


def clone(value: Any) -> Any:
    """A deep copy of JSON data (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def public(record: dict) -> dict:
    """A caller's copy of a stored record: private bookkeeping (``_seq``…) left out."""
    return {k: clone(v) for k, v in record.items() if not k.startswith("_")}


def text(value: Any, label: str, *, max_len: int, required: bool = False, multiline: bool = False) -> str:
    """A user's text: NFC-normalised, trimmed, without control characters, not too long."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise UserError(f"The {label} must be text.", f"Type the {label} again.")
    value = unicodedata.normalize("NFC", value).strip()
    if (_CONTROL if multiline else _CONTROL_ONE_LINE).search(value):
        raise UserError(f"The {label} contains invisible control characters.",
                        f"Type the {label} again without pasting it.")
    if required and not value:
        raise UserError(f"The {label} is missing.", f"Enter the {label}.")
    if len(value) > max_len:
        raise UserError(f"The {label} is too long ({len(value)} characters; at most {max_len}).",
                        f"Shorten the {label}.")
    return value


def iso_date(value: Any, label: str, *, today: date | None = None) -> str | None:
    """A date as ``YYYY-MM-DD`` (text or ``datetime.date``), not in the future, not before 1900."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = date.fromisoformat(value.strip())
        except ValueError:
            raise UserError(f"The {label} {value!r} is not a date.",
                            "Write it as year-month-day, for example 1985-03-21.") from None
    else:
        raise UserError(f"The {label} must be a date.", "Write it as year-month-day, for example 1985-03-21.")
    today = today or clock.now().date()
    if parsed > today:
        raise UserError(f"The {label} {parsed.isoformat()} is in the future.", f"Check the {label}.")
    if parsed.year < 1900:
        raise UserError(f"The {label} {parsed.isoformat()} is too long ago.", f"Check the {label}.")
    return parsed.isoformat()


def past_day(value: Any, label: str, *, today: date | None, problem: type) -> str:
    """An ISO date, not after ``today`` (when given), not before 1900; else ``problem`` (a
    translatable error class of the record kind asking) saying so in the nurse's words."""
    if isinstance(value, date):
        value = value.isoformat()
    try:
        day = date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        day = None
    if day is None:
        raise problem(N_("The %(what)s %(value)r is not a date."), N_("Choose the day again."), what=label,
                           value=value)
    if (today is not None and day > today) or day.year < 1900:
        raise problem(N_("The %(what)s %(day)s is not possible (in the future or too long ago)."),
                           N_("Choose the day again."), what=label, day=day.isoformat())
    return day.isoformat()


def day_bound(value: Any, label: str, *, end: bool) -> str | None:
    """A query bound (date or time) as a string comparable with stored ``created_at`` values."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        value = value.isoformat()
    if not isinstance(value, str):
        raise UserError(f"The {label} must be a date.", "Write it as year-month-day, for example 2026-11-01.")
    value = value.strip()
    if is_time(value):
        return value
    try:
        day = date.fromisoformat(value).isoformat()
    except ValueError:
        raise UserError(f"The {label} {value!r} is not a date.",
                        "Write it as year-month-day, for example 2026-11-01.") from None
    # Inclusive day: everything from 00:00 to the last millisecond of that day.
    return day + ("T23:59:59.999Z" if end else "T00:00:00.000Z")
