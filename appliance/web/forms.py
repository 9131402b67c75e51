"""Reading form fields safely: decoded as UTF-8 (Amharic names), trimmed, length-limited."""
from __future__ import annotations

from bottle import request

from ..errors import UserError
from ..i18n.dates import check_past_date, parse_date
from .request import _


def field(name: str, *, max_len: int = 200, strip: bool = True, source=None) -> str:
    """A text field as typed (UTF-8). Over-long input is refused, never silently cut."""
    forms = request.forms if source is None else source
    value = forms.getunicode(name, default="", encoding="utf-8") or ""
    if strip:
        value = value.strip()
    if len(value) > max_len:
        raise UserError(_("A field is too long (%(n)s characters; at most %(max)s).", n=len(value), max=max_len),
                        _("Shorten it and try again."))
    return value


def query(name: str, *, max_len: int = 100) -> str:
    return field(name, max_len=max_len, source=request.query)


def int_query(name: str, default: int = 0, *, minimum: int = 0, maximum: int = 10**6) -> int:
    try:
        value = int(request.query.get(name, default))
    except (TypeError, ValueError):
        return default
    return max(minimum, min(maximum, value))


def date_value(text: str, calendar: str, *, past: bool = False) -> str | None:
    """The ISO date of a date a user typed in ``calendar`` (``21/07/1982``, ``1 Meskerem 2017``,
    marks such as ``E.C.`` win; see ``appliance.i18n.dates.parse_date``), or None for empty text.

    ``past``: a date of birth, refused when in the future or absurdly long ago. Errors are
    ``BadDate`` (translatable), naming what was typed.
    """
    if not text:
        return None
    day = parse_date(text, calendar)
    if past:
        check_past_date(day, text=text)
    return day.isoformat()


def check_period(start: str | None, end: str | None) -> None:
    """A period of two ISO dates (either may be open) whose start is not after its end."""
    if start and end and start > end:
        raise UserError(_("The start date is after the end date."), _("Swap the two dates."))

