"""The appliance's one wall clock, and what counts as a plausible date.

The record store, the USB exchange and the self-check read the time here (``now()``), so a test
can set the box's clock (``set_clock``, or ``frozen`` as a context manager) the way a box without
a battery clock finds it: at 1970 after a cold boot, at its last shutdown time, or years ahead
after a bad manual setting. Nothing orders records by this clock (appliance.store.ordering): its
times are what a person reads on a record.

A box without a real-time clock boots at 1970-01-01 or, with fake-hwclock, at the time it was
last shut down; a mistyped ``date -s`` can put it years ahead. So:

- nothing real happened before ``EARLIEST_PLAUSIBLE`` (before this software existed): a clock or
  a record dated earlier is wrong;
- a time more than ``FUTURE_SLACK`` ahead of the clock that reads it is in the future (time
  zones and a drifting clock stay well inside a day);
- a clock more than ``MAX_AHEAD`` ahead of the newest record made on the box is implausibly far
  ahead: a box switched off for a season is fine, one that skips years is not.
"""
from __future__ import annotations

import contextlib
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator

EARLIEST_PLAUSIBLE = datetime(2025, 1, 1, tzinfo=timezone.utc)
FUTURE_SLACK = timedelta(days=1)
MAX_AHEAD = timedelta(days=366)


def _system() -> datetime:
    return datetime.now(timezone.utc)


_source: Callable[[], datetime] = _system


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return _source()


def today() -> date:
    """Today's date where the box is (its local time zone): ages, date checks, date hints."""
    return now().astimezone().date()


def set_clock(source: Callable[[], datetime] | datetime | None) -> None:
    """Make ``now()`` read ``source`` (a function, or a fixed time); None: the system clock again."""
    global _source
    if source is None:
        _source = _system
    elif isinstance(source, datetime):
        fixed = source if source.tzinfo else source.replace(tzinfo=timezone.utc)
        _source = lambda: fixed       # noqa: E731
    else:
        _source = source


@contextlib.contextmanager
def frozen(moment: datetime) -> Iterator[None]:
    """``now()`` is ``moment`` inside the block (tests: a box whose clock says that)."""
    previous = _source
    set_clock(moment)
    try:
        yield
    finally:
        set_clock(previous)


def parse(stamp: str) -> datetime | None:
    """A stored ``...Z`` time as a datetime; None when it is not one."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def implausible(stamp: str, reference: datetime | None = None) -> str | None:
    """Why a stored time cannot be right: "in the future" (more than a day after ``reference``,
    by default now), "before this software existed", or None when it is plausible."""
    moment = parse(stamp)
    if moment is None:
        return None
    if moment < EARLIEST_PLAUSIBLE:
        return "before this software existed"
    if moment > (reference or now()) + FUTURE_SLACK:
        return "in the future"
    return None
